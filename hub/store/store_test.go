package store

import (
	"encoding/binary"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/canopy-grid/canopy/hub/imageplan"
	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/images"
)

func open(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestIntentSurvivesRestart commits one of each record kind, closes the
// file as a crash would leave it, and reads the same state back.
func TestIntentSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s := open(t, path)
	st, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	tx := st.Begin()
	if id := tx.NextPlanID(); id != "p1" {
		t.Fatalf("first plan id %s", id)
	}
	tx.PutPending(intent.PendingBoot{Name: "canopy-west-p1-0-0", Site: "west", Group: "atlas", OrderedAt: now})
	tx.PutPending(intent.PendingBoot{Name: "canopy-west-p1-0-1", Site: "west", Group: "atlas", OrderedAt: now})
	tx.PutRetire(intent.RetireOrder{VMID: "vm-1", Site: "west", At: now, Deadline: now.Add(time.Hour), Rule: "keep-alive"})
	tx.PutHold(intent.Hold{VMID: "vm-2", Site: "east", At: now, By: "admin"})
	tx.PutError(intent.ErrorMark{VMID: "vm-3", Site: "east", Since: now, Fault: "No valid host"})
	tx.SetHistory(planner.HistoryState{Failures: []planner.Failure{{Site: "east", At: now, Reason: "quota"}},
		CloudOver: map[string]time.Time{"east": now}})
	tx.AddEvent(intent.Event{At: now, Site: "west", Kind: "boot", Detail: "2 x small"})
	tx.AddEvent(intent.Event{At: now, Site: "west", Kind: "retire"})
	tx.DropPending("canopy-west-p1-0-1")
	el9 := images.Ref{Name: "el9", Algo: "sha512", Hex: strings.Repeat("ab", 64)}
	tx.PutImageWant(imageplan.Want{Ref: el9, Sites: []string{"west", "east"}, From: "api", Seen: map[string]time.Time{"west": now}})
	tx.PutImageWant(imageplan.Want{Ref: images.Ref{Name: "gone", Algo: "md5", Hex: strings.Repeat("0", 32)}, Sites: []string{"west"}})
	tx.DropImageWant("gone")
	if err := s.Commit(tx.Changes()); err != nil {
		t.Fatal(err)
	}
	want := st.Clone()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path)
	defer s.Close()
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.PlanSeq != 1 || len(got.Pending) != 1 || got.Pending["canopy-west-p1-0-0"].Group != "atlas" {
		t.Fatalf("pending after restart: seq %d %+v", got.PlanSeq, got.Pending)
	}
	if r := got.Retire["vm-1"]; !r.Deadline.Equal(want.Retire["vm-1"].Deadline) || r.Rule != "keep-alive" {
		t.Fatalf("retire order after restart: %+v", got.Retire)
	}
	if got.Hold["vm-2"].By != "admin" || got.Error["vm-3"].Fault != "No valid host" {
		t.Fatalf("holds %+v errors %+v", got.Hold, got.Error)
	}
	if len(got.History.Failures) != 1 || !got.History.CloudOver["east"].Equal(now) {
		t.Fatalf("history %+v", got.History)
	}
	if w, ok := got.ImageWants["el9"]; len(got.ImageWants) != 1 || !ok || w.Ref != el9 || len(w.Sites) != 2 || !w.Seen["west"].Equal(now) {
		t.Fatalf("image wants after restart: %+v", got.ImageWants)
	}
	if len(got.Events) != 2 || got.Events[0].Kind != "boot" || got.Events[1].Seq != 2 || got.EventSeq != 2 {
		t.Fatalf("events %+v", got.Events)
	}
	tx = got.Begin()
	if id := tx.NextPlanID(); id != "p2" {
		t.Fatalf("plan id after restart %s, want p2", id)
	}
}

// TestOneCommitPerBatch checks that a thousand changes cost one write
// transaction.
func TestOneCommitPerBatch(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "hub.db"))
	defer s.Close()
	st, _ := s.Load()
	tx := st.Begin()
	for i := range 1000 {
		tx.PutRetire(intent.RetireOrder{VMID: "vm-" + string(rune('a'+i%26)) + "-" + itoa(i), Site: "west"})
	}
	before := s.Stats().Write
	if err := s.Commit(tx.Changes()); err != nil {
		t.Fatal(err)
	}
	if n := s.Stats().Write - before; n < 1 {
		t.Fatalf("no page write for the batch")
	}
	st2, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(st2.Retire) != 1000 {
		t.Fatalf("%d orders after commit", len(st2.Retire))
	}
}

func itoa(i int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
		if i == 0 {
			return string(b)
		}
	}
}

func TestSecondHubRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s := open(t, path)
	defer s.Close()
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "another hub") {
		t.Fatalf("second open: %v", err)
	}
}

// TestMigratesFirstLayout opens a file written by the first releases: an
// 8-byte plan counter and a bucket of held VM ids.
func TestMigratesFirstLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		m, _ := tx.CreateBucket([]byte("meta"))
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], 41)
		if err := m.Put([]byte("plan_seq"), b[:]); err != nil {
			return err
		}
		h, _ := tx.CreateBucket([]byte("held"))
		return h.Put([]byte("vm-9"), []byte("2026-01-02T03:04:05Z"))
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	s := open(t, path)
	defer s.Close()
	st, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if st.PlanSeq != 41 || st.Hold["vm-9"].At.Year() != 2026 {
		t.Fatalf("migrated: seq %d holds %+v", st.PlanSeq, st.Hold)
	}
}

// TestMigratesCloudToSite: records written when the intent tables named a
// site "cloud" load with their site, and are rewritten once.
func TestMigratesCloudToSite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	old := []struct {
		table intent.Table
		key   string
		value string
	}{
		{intent.TablePending, "canopy-west-p1-0-0", `{"name":"canopy-west-p1-0-0","cloud":"west","group":"atlas","vm_type":"el9","flavor":"c4","plan_id":"p1","command_id":"c1","cpus":4,"memory_mib":8000,"ordered_at":"2026-01-02T03:04:05Z"}`},
		{intent.TableRetire, "vm-1", `{"vm_id":"vm-1","cloud":"west","at":"2026-01-02T03:04:05Z","deadline":"2026-01-03T03:04:05Z"}`},
		{intent.TableHold, "vm-2", `{"vm_id":"vm-2","cloud":"east","at":"2026-01-02T03:04:05Z"}`},
		{intent.TableError, "vm-3", `{"vm_id":"vm-3","cloud":"east","since":"2026-01-02T03:04:05Z","fault":"No valid host"}`},
		{intent.TableEvents, "00000000000000000001", `{"seq":1,"at":"2026-01-02T03:04:05Z","cloud":"west","kind":"boot","detail":"the \"cloud\" said no"}`},
	}
	// The file as a hub before the rename left it: records only.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, o := range old {
			b, err := tx.CreateBucketIfNotExists([]byte(o.table))
			if err != nil {
				return err
			}
			if err := b.Put([]byte(o.key), []byte(o.value)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	var s *Store
	for range 2 { // the second open finds nothing left to rewrite
		s = open(t, path)
		st, err := s.Load()
		_ = s.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := []string{st.Pending["canopy-west-p1-0-0"].Site, st.Retire["vm-1"].Site, st.Hold["vm-2"].Site, st.Error["vm-3"].Site}
		if want := []string{"west", "west", "east", "east"}; !slices.Equal(got, want) {
			t.Fatalf("sites after the rewrite: %v, want %v", got, want)
		}
		if len(st.Events) != 1 || st.Events[0].Site != "west" || st.Events[0].Detail != `the "cloud" said no` {
			t.Fatalf("events after the rewrite: %+v", st.Events)
		}
	}
}

// TestCorruptRecordRefused: a record that does not decode stops the load
// with its table and key named.
func TestCorruptRecordRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s := open(t, path)
	if err := s.Commit([]intent.Change{{Table: intent.TableRetire, Key: "vm-1", Value: []byte("{not json")}}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Load()
	if err == nil || !strings.Contains(err.Error(), "retire/vm-1") {
		t.Fatalf("load of a corrupt record: %v", err)
	}
	_ = s.Close()
}

// BenchmarkRetire1000 compares writing a cycle that retires 1,000 VMs
// (an order and an event each) one transaction per record, as the hub did
// before, with one transaction per cycle. Each transaction is one fsync.
func BenchmarkRetire1000(b *testing.B) {
	now := time.Now()
	changes := func(st *intent.State) []intent.Change {
		tx := st.Begin()
		for i := range 1000 {
			id := "vm-" + itoa(i)
			tx.PutRetire(intent.RetireOrder{VMID: id, Site: "west", At: now, Deadline: now.Add(24 * time.Hour), Rule: "keep-alive",
				Reason: "idle for 12m since 10:00, past default keep-alive 10m; no idle job needs it"})
			tx.AddEvent(intent.Event{At: now, Site: "west", VM: id, Plan: "p1", Kind: "retire", Detail: "idle"})
		}
		return tx.Changes()
	}
	for _, mode := range []string{"per-record", "per-cycle"} {
		b.Run(mode, func(b *testing.B) {
			s := open(b, filepath.Join(b.TempDir(), "hub.db"))
			defer s.Close()
			commits := 0
			for b.Loop() {
				st := intent.New()
				cs := changes(st)
				if mode == "per-cycle" {
					if err := s.Commit(cs); err != nil {
						b.Fatal(err)
					}
					commits++
					continue
				}
				for _, c := range cs {
					if err := s.Commit([]intent.Change{c}); err != nil {
						b.Fatal(err)
					}
					commits++
				}
			}
			b.ReportMetric(float64(commits)/float64(b.N), "fsyncs/cycle")
		})
	}
}

// TestBlobsSurviveRestart: a blob written is read back after the file is
// closed and opened again; a key never written reads as nil.
func TestBlobsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s := open(t, path)
	if err := s.PutBlob("series", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	defer s.Close()
	tests := []struct {
		key, want string
	}{{"series", "abc"}, {"ledger", ""}}
	for _, tc := range tests {
		b, err := s.Blob(tc.key)
		if err != nil || string(b) != tc.want {
			t.Fatalf("blob %s: %q, %v; want %q", tc.key, b, err, tc.want)
		}
	}
}
