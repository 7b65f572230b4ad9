package cmdrun

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		limit   int
		out     string
		code    int
		wantErr error
	}{
		{name: "output", args: []string{"-c", "printf hello; printf oops >&2"}, out: "hello"},
		{name: "exit code is not an error", args: []string{"-c", "exit 3"}, code: 3},
		{name: "output over the limit", args: []string{"-c", "head -c 5000 /dev/zero"}, limit: 100, code: -1, wantErr: ErrOutputTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, _, code, err := Exec{MaxOutput: tc.limit}.Run(context.Background(), "/bin/sh", tc.args...)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || code != -1 {
					t.Fatalf("err %v code %d, want %v", err, code, tc.wantErr)
				}
				return
			}
			if err != nil || code != tc.code || (tc.out != "" && string(out) != tc.out) {
				t.Fatalf("out %q code %d err %v", out, code, err)
			}
		})
	}
	if _, _, code, err := (Exec{}).Run(context.Background(), "/no/such/tool"); err == nil || code != -1 {
		t.Fatalf("missing tool: code %d err %v", code, err)
	}
}

// TestCancelKillsTheGroup: a tool's child (like gluster's glfsheal) dies
// with it when the context ends.
func TestCancelKillsTheGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, _, code, err := Exec{WaitDelay: time.Second}.Run(ctx, "/bin/sh", "-c", "sleep 60 & echo $! > "+pidFile+"; wait")
	if !errors.Is(err, context.DeadlineExceeded) || code != -1 {
		t.Fatalf("err %v code %d", err, code)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("child %d outlived its group's cancellation", pid)
		}
		<-time.After(20 * time.Millisecond)
	}
}
