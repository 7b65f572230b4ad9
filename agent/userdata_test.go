package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/canopy-grid/canopy/internal/pkitest"
	"github.com/canopy-grid/canopy/protocol/userdata"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

func writeTemp(t *testing.T, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func vmSettings(caPEM string) vmproto.Settings {
	return vmproto.Settings{AgentURL: "https://10.0.0.5:7080", AgentCA: caPEM, EnrollToken: "abc.def", CondorHost: "cm.example.org:9618",
		Site: "east", Group: "atlas", VMType: "el9"}
}

func TestUserDataRenderer(t *testing.T) {
	ca := pkitest.New(t)
	ctx := VMContext{
		Gluster:       &vmproto.GlusterMount{Servers: []string{"gl1", "gl2"}, Volume: "sw", MountPoint: "/mnt/sw"},
		Proxies:       [][]string{{"http://squid1:3128", "http://squid2:3128"}},
		UserDataParts: []string{"../deploy/cloud-init/site-example.yaml", "../deploy/cloud-init/site-example.sh"},
	}
	r, err := NewUserDataRenderer(ctx, ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	ud, err := r.Render(vmSettings(ca.PEM))
	if err != nil {
		t.Fatal(err)
	}
	parts, err := userdata.Split(ud)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, p := range parts {
		types = append(types, p.Type+" "+p.Filename)
	}
	want := []string{"text/cloud-config canopy-vmagent.yaml", "text/cloud-config site-example.yaml", "text/x-shellscript site-example.sh"}
	if !reflect.DeepEqual(types, want) {
		t.Fatalf("parts %q, want %q", types, want)
	}
	site, _ := os.ReadFile("../deploy/cloud-init/site-example.yaml")
	if !bytes.Equal(parts[1].Content, site) {
		t.Error("admin part changed on the way")
	}
	s, err := vmproto.ParseUserData(ud)
	if err != nil {
		t.Fatal(err)
	}
	if s.EnrollToken != "abc.def" || s.AgentCA != ca.PEM || !reflect.DeepEqual(s.Gluster, ctx.Gluster) || !reflect.DeepEqual(s.Proxies, ctx.Proxies) {
		t.Fatalf("settings %+v", s)
	}

	// Without extra parts the user-data is a single #cloud-config document.
	plain, err := NewUserDataRenderer(VMContext{}, ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	ud, err = plain.Render(vmSettings(ca.PEM))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(ud, []byte("#cloud-config\n")) {
		t.Fatalf("user-data starts %q", ud[:30])
	}
}

func TestUserDataRendererRefusesBadSiteFiles(t *testing.T) {
	ca := pkitest.New(t)
	big := append([]byte("#!/bin/sh\n"), bytes.Repeat([]byte("#"), userdata.MaxSize-200)...)
	tests := []struct {
		name string
		c    VMContext
		want string
	}{
		{"site-wide IDTOKEN (retired)", VMContext{CondorIDTokenFile: writeTemp(t, "t", []byte("a.b.c"))}, "condor_idtoken_file is no longer supported"},
		{"pool signing key (retired)", VMContext{PoolSigningKeyFile: writeTemp(t, "POOL", []byte{1})}, "must never reach a VM"},
		{"missing part", VMContext{UserDataParts: []string{"/nonexistent/part.sh"}}, "no such file"},
		{"empty part", VMContext{UserDataParts: []string{writeTemp(t, "e.sh", nil)}}, "is empty"},
		{"part of unknown type", VMContext{UserDataParts: []string{writeTemp(t, "p", []byte("hello\n"))}}, "not one of"},
		{"cloud-config part not YAML", VMContext{UserDataParts: []string{writeTemp(t, "p.yaml", []byte("#cloud-config\na: [\n"))}}, "not YAML"},
		{"parts too big for Nova", VMContext{UserDataParts: []string{writeTemp(t, "big.sh", big)}}, "limit"},
		{"bad proxy", VMContext{Proxies: [][]string{{"squid:3128"}}}, "proxies"},
		{"bad volume", VMContext{Gluster: &vmproto.GlusterMount{Servers: []string{"gl1"}, Volume: "sw", MountPoint: "/etc"}}, "system directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewUserDataRenderer(tt.c, ca.PEM)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one containing %q", err, tt.want)
			}
		})
	}
}
