package vmagent

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/canopy-grid/canopy/protocol/vmproto"
)

func TestFstabLine(t *testing.T) {
	tests := []struct {
		g    vmproto.GlusterMount
		want string
	}{
		{vmproto.GlusterMount{Servers: []string{"gl1"}, Volume: "sw", MountPoint: "/mnt/sw"},
			"gl1:/sw /mnt/sw glusterfs ro,_netdev 0 0"},
		{*fullSettings().Gluster,
			"gl1.example.org:/software /mnt/canopy glusterfs ro,_netdev,backup-volfile-servers=gl2.example.org:10.0.0.9 0 0"},
	}
	for _, tt := range tests {
		if got := FstabLine(tt.g); got != tt.want {
			t.Errorf("FstabLine = %q, want %q", got, tt.want)
		}
	}
}

func TestMergeFstab(t *testing.T) {
	const line = "gl1:/sw /mnt/sw glusterfs ro,_netdev 0 0"
	tests := []struct{ name, in, want string }{
		{"empty", "", line + "\n"},
		{"others kept", "UUID=abc / ext4 defaults 0 1\n", "UUID=abc / ext4 defaults 0 1\n" + line + "\n"},
		{"no trailing newline", "UUID=abc / ext4 defaults 0 1", "UUID=abc / ext4 defaults 0 1\n" + line + "\n"},
		{"old entry replaced in place", "# root\nUUID=abc / ext4 defaults 0 1\nold:/sw /mnt/sw glusterfs ro 0 0\ntmpfs /tmp tmpfs defaults 0 0\n",
			"# root\nUUID=abc / ext4 defaults 0 1\n" + line + "\ntmpfs /tmp tmpfs defaults 0 0\n"},
		{"duplicates dropped", "a:/x /mnt/sw glusterfs ro 0 0\nb:/y /mnt/sw glusterfs ro 0 0\n", line + "\n"},
		{"commented entry left alone", "#a:/x /mnt/sw glusterfs ro 0 0\n", "#a:/x /mnt/sw glusterfs ro 0 0\n" + line + "\n"},
		{"already there", line + "\n", line + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(mergeFstab([]byte(tt.in), "/mnt/sw", line)); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMountGluster(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	g := *fullSettings().Gluster
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, FstabPath), []byte("UUID=abc / ext4 defaults 0 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newFakeRunner(t, map[string][]answer{"mount": {{}}})
	changed, err := MountGluster(ctx, root, g, r)
	if err != nil || !changed {
		t.Fatalf("first mount: changed %v, err %v", changed, err)
	}
	if got, want := readFile(t, filepath.Join(root, FstabPath)), "UUID=abc / ext4 defaults 0 1\n"+FstabLine(g)+"\n"; got != want {
		t.Errorf("fstab %q, want %q", got, want)
	}
	if st, err := os.Stat(filepath.Join(root, g.MountPoint)); err != nil || !st.IsDir() {
		t.Errorf("mount point not made: %v", err)
	}
	if calls := r.Calls(); len(calls) != 1 || calls[0] != "mount /mnt/canopy" {
		t.Fatalf("calls %q", calls)
	}

	// Mounted now: a second run changes nothing and mounts nothing.
	if err := os.MkdirAll(filepath.Join(root, "proc", "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	mounts := "/dev/vda1 / ext4 rw 0 0\ngl1.example.org:/software /mnt/canopy fuse.glusterfs ro,relatime 0 0\n"
	if err := os.WriteFile(filepath.Join(root, "proc", "self", "mounts"), []byte(mounts), 0o444); err != nil {
		t.Fatal(err)
	}
	changed, err = MountGluster(ctx, root, g, r)
	if err != nil || changed {
		t.Fatalf("second run: changed %v, err %v", changed, err)
	}
	if calls := r.Calls(); len(calls) != 1 {
		t.Fatalf("calls %q", calls)
	}

	// A failing mount is an error naming the volume and what mount said.
	root2 := t.TempDir()
	r2 := newFakeRunner(t, map[string][]answer{"mount": {{stderr: "Mount failed. Check the log file for more details.", code: 1}}})
	if _, err := MountGluster(ctx, root2, g, r2); err == nil || !containsAll(err.Error(), "gl1.example.org:/software", "Mount failed") {
		t.Fatalf("err %v", err)
	}
}
