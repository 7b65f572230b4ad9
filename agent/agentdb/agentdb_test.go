package agentdb

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/canopy-grid/canopy/protocol"
)

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	hub := "hub-1"
	vm := &VM{Name: "vm-a", Ready: true, ReadyAt: at, LastSeen: at.Add(time.Second), JobsSeen: at,
		Jobs:   &protocol.VMJobs{Running: 2, Claimed: 3, At: at},
		Retire: &Retirement{Deadline: at.Add(time.Hour), Reason: "idle", OrderedAt: at, State: protocol.RetireFailed, Error: "denied"}}
	steps := []Batch{
		{HubID: &hub, VMs: map[string]*VM{"a": vm, "b": {Name: "vm-b"}}, Deleted: map[string]time.Time{"x": at, "y": at},
			Results: map[string]*Result{"c1": {Seq: 2, At: at, Result: protocol.Result{CommandID: "c1", OK: true, VMIDs: []string{"a"}}},
				"c0": {Seq: 1, At: at, Result: protocol.Result{CommandID: "c0", Class: protocol.ErrClassRefused,
					Refused: []protocol.Refusal{{VMID: "b", Reason: "jobs"}}}}}},
		// Removals: a nil VM or result, a zero deletion time.
		{VMs: map[string]*VM{"b": nil}, Deleted: map[string]time.Time{"y": {}}, Results: map[string]*Result{"gone": nil}},
		{},
	}
	for _, b := range steps {
		if err := db.Commit(&b); err != nil {
			t.Fatal(err)
		}
	}
	if db.Commits() != 2 {
		t.Fatalf("%d commits, want 2 (an empty batch is not written)", db.Commits())
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := db.Load()
	if err != nil {
		t.Fatal(err)
	}
	got := st.VMs["a"]
	if st.HubID != hub || len(st.VMs) != 1 || got.Name != "vm-a" || !got.ReadyAt.Equal(at) || got.Jobs.Claimed != 3 ||
		got.Retire.State != protocol.RetireFailed || got.Retire.Error != "denied" || !got.Retire.Deadline.Equal(at.Add(time.Hour)) {
		t.Fatalf("loaded %+v", st)
	}
	if len(st.Deleted) != 1 || !st.Deleted["x"].Equal(at) {
		t.Fatalf("deleted %v", st.Deleted)
	}
	if len(st.Results) != 2 || st.Results[0].Result.CommandID != "c0" || st.Results[1].Result.CommandID != "c1" ||
		st.Results[0].Result.Refused[0].Reason != "jobs" {
		t.Fatalf("results %+v", st.Results)
	}
}

func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	// A second agent on the same file.
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "another agent holds it") {
		t.Fatalf("second open: %v", err)
	}
	// A file from a newer agent.
	if err := db.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint64(nil, Schema+1))
	}); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "schema 2") {
		t.Fatalf("newer schema: %v", err)
	}
	// A result record under another command's key.
	path2 := filepath.Join(dir, "other.db")
	db, err = Open(path2)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Commit(&Batch{Results: map[string]*Result{"c1": {Result: protocol.Result{CommandID: "c2"}}}}); err != nil {
		t.Fatal(err)
	}
	_, err = db.Load()
	var ce *CorruptError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), path2) || !strings.Contains(err.Error(), `key "c1"`) {
		t.Fatalf("load: %v", err)
	}
}
