package classad

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// TestGoldenVectors checks every expression of the vectors recorded from
// HTCondor 24.0.23 (condor_status -ads 60_classad_golden_context.ad -af:V).
func TestGoldenVectors(t *testing.T) {
	f, err := os.Open("testdata/60_classad_golden_context.ad")
	if err != nil {
		t.Fatal(err)
	}
	ads, err := ParseLong(f)
	f.Close()
	if err != nil || len(ads) != 1 {
		t.Fatalf("context ad: %v (%d ads)", err, len(ads))
	}
	ctx := ads[0]

	vf, err := os.Open("testdata/60_classad_golden_vectors.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer vf.Close()
	sc := bufio.NewScanner(vf)
	rows := 0
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		src, want, ok := strings.Cut(text, "\t")
		if !ok {
			t.Fatalf("line %d: no tab in %q", line, text)
		}
		rows++
		e, err := Parse(src)
		if err != nil {
			t.Errorf("line %d: Parse(%q): %v", line, src, err)
			continue
		}
		if got := Eval(e, ctx, nil).String(); got != want {
			t.Errorf("line %d: %s = %s, HTCondor says %s", line, src, got, want)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if rows < 60 {
		t.Fatalf("only %d golden rows read", rows)
	}
	t.Logf("%d golden vectors agree", rows)
}
