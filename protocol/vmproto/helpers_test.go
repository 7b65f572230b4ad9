package vmproto

import (
	"os"
	"testing"
)

// testCA is a CA certificate (testdata/agent-ca.pem, made by pki.InitCA).
var testCA = mustRead("testdata/agent-ca.pem")

func mustRead(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// fullSettings uses every setting.
func fullSettings() Settings {
	return Settings{
		AgentURL:          "https://10.0.0.5:7080",
		AgentCA:           testCA,
		EnrollToken:       "eyJzaXRlIjoiZWFzdCJ9.c2ln",
		CondorHost:        "cm.example.org:9618",
		CondorTrustDomain: "cm.example.org",
		CondorUIDDomain:   "example.org",
		CondorCCBAddress:  "cm.example.org:9618",
		Site:              "east",
		Group:             "atlas",
		VMType:            "el9",
		Gluster: &GlusterMount{Servers: []string{"gl1.example.org", "gl2.example.org", "10.0.0.9"},
			Volume: "software", MountPoint: "/mnt/canopy"},
		Proxies:        [][]string{{"http://squid1.example.org:3128", "http://squid2.example.org:3128"}, {"http://squid3.example.org:3128"}},
		CVMFSProbeURL:  "http://cvmfs-stratum1.example.org/cvmfs/atlas.cern.ch/.cvmfspublished",
		GossipJoin:     "10.0.0.5:7946",
		GossipAgentKey: "MCowBQYDK2VwAyEA",
	}
}

// minimalSettings are the required settings only.
func minimalSettings() Settings {
	return Settings{AgentURL: "https://127.0.0.1:7080", AgentCA: testCA, EnrollToken: "abc.def", CondorHost: "127.0.0.1:9618",
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
