package vmproto

import (
	"os"
	"testing"
)

// fullSettings uses every setting.
func fullSettings() Settings {
	return Settings{
		AgentURL:       "http://10.0.0.5:7080",
		Token:          "eyJzaXRlIjoiZWFzdCJ9.c2ln",
		CondorHost:     "cm.example.org:9618",
		Site:           "east",
		Group:          "atlas",
		VMType:         "el9",
		CondorIDToken:  "eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJzdWIiOiJ3b3JrZXJAcG9vbCJ9.c2lnbmF0dXJl",
		PoolSigningKey: "c2VjcmV0LXBvb2wta2V5",
		Gluster: &GlusterMount{Servers: []string{"gl1.example.org", "gl2.example.org", "10.0.0.9"},
			Volume: "software", MountPoint: "/mnt/canopy"},
		Proxies: [][]string{{"http://squid1.example.org:3128", "http://squid2.example.org:3128"}, {"http://squid3.example.org:3128"}},
	}
}

// minimalSettings are what the skeleton's agent sends.
func minimalSettings() Settings {
	return Settings{AgentURL: "http://127.0.0.1:7080", Token: "abc.def", CondorHost: "127.0.0.1:9618",
		Site: "east", Group: "atlas", VMType: "el9"}
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
