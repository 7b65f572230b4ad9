package gluster

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/canopy-grid/canopy/agent/gluster/glusterfake"
	"github.com/canopy-grid/canopy/protocol"
)

// TestReportCBORRoundTrip encodes every scenario's report as the protocol
// does (core deterministic CBOR, RFC 3339 times) and decodes it back.
func TestReportCBORRoundTrip(t *testing.T) {
	encOpts := cbor.CoreDetEncOptions()
	encOpts.Time = cbor.TimeRFC3339Nano
	enc, err := encOpts.EncMode()
	if err != nil {
		t.Fatal(err)
	}
	dec, err := cbor.DecOptions{DupMapKey: cbor.DupMapKeyEnforcedAPF}.DecMode()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("testdata/scenarios/*.tsv")
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".tsv"), func(t *testing.T) {
			fake, sc, err := glusterfake.LoadScenario(path, "testdata/fixtures")
			if err != nil {
				t.Fatal(err)
			}
			c := New(fake, Config{Location: time.UTC, Now: func() time.Time { return sc.TakenAt }, Log: quietLog()})
			r, err := c.Collect(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			b, err := enc.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var got protocol.StorageReport
			if err := dec.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(normTimes(got), normTimes(r)) {
				t.Errorf("round trip differs:\n got %+v\nwant %+v", got, r)
			}
		})
	}
}

// normTimes puts every time in UTC, as a decoded RFC 3339 time may carry
// another *time.Location value for the same zone.
func normTimes(r protocol.StorageReport) protocol.StorageReport {
	r.TakenAt = r.TakenAt.UTC()
	for i := range r.GeoReps {
		g := &r.GeoReps[i]
		g.CheckpointTime = g.CheckpointTime.UTC()
		for j := range g.Workers {
			w := &g.Workers[j]
			w.LastSynced, w.CheckpointCompletedAt = w.LastSynced.UTC(), w.CheckpointCompletedAt.UTC()
		}
	}
	return r
}
