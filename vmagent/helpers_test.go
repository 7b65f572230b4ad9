package vmagent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// answer is what a fake command prints.
type answer struct {
	stdout, stderr string
	code           int
	err            error
}

// recorded loads a recorded HTCondor answer from testdata/htcondor.
func recorded(t testing.TB, name string) answer {
	t.Helper()
	read := func(ext string) string {
		b, err := os.ReadFile(filepath.Join("testdata", "htcondor", name+"."+ext))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	code, err := strconv.Atoi(strings.TrimSpace(read("rc")))
	if err != nil {
		t.Fatalf("%s.rc: %v", name, err)
	}
	return answer{stdout: read("out"), stderr: read("err"), code: code}
}

// fakeRunner answers commands by their name (the first word), replaying a
// queue of answers per name; the last answer of a queue repeats. It records
// every command line it was given. Unknown commands fail the test.
type fakeRunner struct {
	t       testing.TB
	mu      sync.Mutex
	answers map[string][]answer
	calls   []string
	// onRun, if set, is called with each command line (e.g. to fake the
	// side effects of mount).
	onRun func(line string)
}

func newFakeRunner(t testing.TB, answers map[string][]answer) *fakeRunner {
	return &fakeRunner{t: t, answers: answers}
}

func (f *fakeRunner) Run(_ context.Context, name string, args ...string) ([]byte, []byte, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	line := commandLine(name, args)
	f.calls = append(f.calls, line)
	if f.onRun != nil {
		f.onRun(line)
	}
	q, ok := f.answers[name]
	if !ok || len(q) == 0 {
		f.t.Errorf("unexpected command %q", line)
		return nil, nil, -1, fmt.Errorf("unexpected command %q", line)
	}
	a := q[0]
	if len(q) > 1 {
		f.answers[name] = q[1:]
	}
	return []byte(a.stdout), []byte(a.stderr), a.code, a.err
}

func (f *fakeRunner) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// testLog returns a logger whose entries the test can inspect.
func testLog() (*logrus.Entry, *test.Hook) {
	l, hook := test.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l), hook
}

// testMetadata is the metadata of a VM in the tests.
var testMetadata = Metadata{UUID: "1b4e28ba-2fa1-41d2-883f-0016d3cca427", Name: "canopy-east-p1-0-0", Hostname: "canopy-east-p1-0-0"}

// testCA is a CA certificate (testdata/agent-ca.pem, made by pki.InitCA).
var testCA = func() string {
	b, err := os.ReadFile("testdata/agent-ca.pem")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

// fullSettings uses every setting.
func fullSettings() vmproto.Settings {
	return vmproto.Settings{
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
		HS06PerCore:       10.5,
		Gluster: &vmproto.GlusterMount{Servers: []string{"gl1.example.org", "gl2.example.org", "10.0.0.9"},
			Volume: "software", MountPoint: "/mnt/canopy"},
		Proxies: [][]string{{"http://squid1.example.org:3128", "http://squid2.example.org:3128"}, {"http://squid3.example.org:3128"}},
	}
}

// minimalSettings are the required settings only.
func minimalSettings() vmproto.Settings {
	return vmproto.Settings{AgentURL: "https://127.0.0.1:7080", AgentCA: testCA, EnrollToken: "abc.def", CondorHost: "127.0.0.1:9618",
		Site: "east", Group: "atlas", VMType: "el9"}
}

// testIDToken is an IDTOKEN-shaped string.
const testIDToken = "eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJzdWIiOiJ3b3JrZXJAcG9vbCJ9.c2lnbmF0dXJl"

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func containsLine(text, line string) bool {
	for l := range strings.SplitSeq(text, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

func hasEntry(hook *test.Hook, msg string) bool {
	for _, e := range hook.AllEntries() {
		if e.Message == msg {
			return true
		}
	}
	return false
}
