package gluster

import (
	"context"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/agent/gluster/glusterfake"
)

// BenchmarkCollectReplay measures the agent's own cost of one cycle: the
// recorded outputs of a cycle with a brick down and 24 entries pending
// heal, parsed and assessed (the gluster commands themselves are
// measured by BenchmarkCollectLive, build tag integration).
func BenchmarkCollectReplay(b *testing.B) {
	f, sc, err := glusterfake.LoadScenario("testdata/scenarios/pending-brick-down.tsv", "testdata/fixtures")
	if err != nil {
		b.Fatal(err)
	}
	c := New(f, Config{Location: time.UTC, Now: func() time.Time { return sc.TakenAt }, Log: quietLog()})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Collect(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseGeoRepStatus(b *testing.B) {
	out := readFixture(b, "georep-status-detail-checkpoint-completed.xml")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseGeoRepStatus(out, time.UTC); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseHealInfo(b *testing.B) {
	out := readFixture(b, "heal-info-pending-brick-down.xml")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseHeal(out); err != nil {
			b.Fatal(err)
		}
	}
}
