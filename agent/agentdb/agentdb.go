// Package agentdb keeps a site agent's durable intent in one bbolt file
// (<state_dir>/agent.db): its VM book (what each VM reported and what the
// hub ordered for it), the servers it deleted (so a replayed VM token is
// refused after a restart) and the results of recent commands (so a
// command id replayed after a restart gets its stored result instead of
// running again). The agent loads it whole at start and commits changes in
// batches: one transaction, one fsync, however many VMs changed.
//
// Why bbolt: the same reasons as the hub's store (hub/store): a few
// thousand small records written by one process, pure Go, one file, ACID
// transactions and crash safety through copy-on-write pages.
package agentdb

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/canopy-grid/canopy/protocol"
)

// FileName is the state file's name inside the agent's state_dir.
const FileName = "agent.db"

// Schema is the layout version written in the meta bucket.
const Schema = 1

// Buckets.
var (
	bucketMeta    = []byte("meta")
	bucketVMs     = []byte("vms")
	bucketDeleted = []byte("deleted")
	bucketResults = []byte("results")
	keySchema     = []byte("schema")
	keyHubID      = []byte("hub_id")
)

// VM is what the agent keeps of one server, by server id.
type VM struct {
	// Name is the server's name (from its check-ins).
	Name string `json:"name"`
	// Ready is true once the VM checked in; ReadyAt is its first check-in.
	Ready   bool      `json:"ready"`
	ReadyAt time.Time `json:"ready_at,omitzero"`
	// LastSeen is the agent's time of the VM's last check-in.
	LastSeen time.Time `json:"last_seen,omitzero"`
	// Jobs is the VM's last job count (At is the VM's time of the count);
	// JobsSeen is the agent's time of the check-in that carried it. Nil:
	// the VM never reported a count.
	Jobs     *protocol.VMJobs `json:"jobs,omitempty"`
	JobsSeen time.Time        `json:"jobs_seen,omitzero"`
	// Retire is the hub's retirement order and its progress; nil when none.
	Retire *Retirement `json:"retire,omitempty"`
	// UnreachableSince is when the site's gossip pool declared the VM
	// failed; zero while it answers.
	UnreachableSince time.Time `json:"unreachable_since,omitzero"`
}

// Retirement is a retirement order and how far the VM got.
type Retirement struct {
	// Deadline is when running jobs must be done (the hub's deadline,
	// made absolute when the order arrived); the earliest order wins.
	Deadline  time.Time `json:"deadline"`
	Reason    string    `json:"reason,omitempty"`
	OrderedAt time.Time `json:"ordered_at"`
	// State is protocol.RetireOrdered, RetireDraining, RetireDrained or
	// RetireFailed; Error says why it failed.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// DrainedAt is when the VM reported that HTCondor confirmed no job runs.
	DrainedAt time.Time `json:"drained_at,omitzero"`
}

// Result is a finished command's result; Seq orders results by finish.
type Result struct {
	Seq    uint64          `json:"seq"`
	At     time.Time       `json:"at"`
	Result protocol.Result `json:"result"`
}

// State is everything the file holds.
type State struct {
	// HubID is the id of the hub last connected (Welcome.HubID).
	HubID string
	// VMs is the book, by server id.
	VMs map[string]VM
	// Deleted are servers this agent deleted, with when.
	Deleted map[string]time.Time
	// Results are recent command results, oldest first.
	Results []Result
}

// Batch is a set of changes committed in one transaction. A nil VM or
// Result, or a zero Deleted time, removes the key.
type Batch struct {
	HubID   *string
	VMs     map[string]*VM
	Deleted map[string]time.Time
	Results map[string]*Result
}

// Empty reports whether the batch changes nothing.
func (b *Batch) Empty() bool {
	return b.HubID == nil && len(b.VMs) == 0 && len(b.Deleted) == 0 && len(b.Results) == 0
}

// Store is an open state file.
type Store struct {
	db      *bolt.DB
	path    string
	commits atomic.Uint64
}

// CorruptError says the state file cannot be read. The agent refuses to
// start on it rather than drop the retirement orders it may hold.
type CorruptError struct {
	Path   string
	Detail string
	Err    error
}

// Error says which file is unreadable, why, and what the operator can do.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("agent state %s is unreadable (%s): refusing to start, as it may hold retirement orders; "+
		"restore it from a backup, or move it aside to start with an empty book (the hub re-sends its retirement orders)",
		e.Path, e.Detail)
}

// Unwrap returns the underlying error, if any.
func (e *CorruptError) Unwrap() error { return e.Err }

// Open opens or creates the state file at path. Only one agent may hold it.
func Open(path string) (st *Store, err error) {
	defer func() {
		// bbolt panics on some corrupt pages; a panic here is a bad file.
		if r := recover(); r != nil {
			st, err = nil, &CorruptError{Path: path, Detail: fmt.Sprint(r)}
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		switch {
		case errors.Is(err, bolterrors.ErrTimeout):
			return nil, fmt.Errorf("open agent state %s: another agent holds it", path)
		case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
			errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrInvalidMapping):
			return nil, &CorruptError{Path: path, Detail: err.Error(), Err: err}
		}
		return nil, fmt.Errorf("open agent state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketVMs, bucketDeleted, bucketResults} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil {
			if len(v) != 8 {
				return &CorruptError{Path: path, Detail: "bad schema record"}
			}
			if n := binary.BigEndian.Uint64(v); n > Schema {
				return fmt.Errorf("agent state %s has schema %d; this agent knows up to %d (downgrade?)", path, n, Schema)
			}
			return nil
		}
		return meta.Put(keySchema, binary.BigEndian.AppendUint64(nil, Schema))
	})
	if err != nil {
		_ = db.Close()
		var ce *CorruptError
		if errors.As(err, &ce) {
			return nil, ce
		}
		return nil, fmt.Errorf("open agent state %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Path is the state file's path.
func (s *Store) Path() string { return s.path }

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Commits counts committed batches (for tests and metrics).
func (s *Store) Commits() uint64 { return s.commits.Load() }

// Load reads the whole state. A record that does not decode is a
// CorruptError naming its bucket and key.
func (s *Store) Load() (st *State, err error) {
	defer func() {
		if r := recover(); r != nil {
			st, err = nil, &CorruptError{Path: s.path, Detail: fmt.Sprint(r)}
		}
	}()
	st = &State{VMs: map[string]VM{}, Deleted: map[string]time.Time{}}
	err = s.db.View(func(tx *bolt.Tx) error {
		bad := func(bucket []byte, k []byte, err error) error {
			return &CorruptError{Path: s.path, Detail: fmt.Sprintf("bucket %s, key %q: %v", bucket, k, err), Err: err}
		}
		st.HubID = string(tx.Bucket(bucketMeta).Get(keyHubID))
		if err := tx.Bucket(bucketVMs).ForEach(func(k, v []byte) error {
			var vm VM
			if err := json.Unmarshal(v, &vm); err != nil {
				return bad(bucketVMs, k, err)
			}
			if vm.Retire != nil && !validRetireState(vm.Retire.State) {
				return bad(bucketVMs, k, fmt.Errorf("unknown retirement state %q", vm.Retire.State))
			}
			st.VMs[string(k)] = vm
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketDeleted).ForEach(func(k, v []byte) error {
			var at time.Time
			if err := at.UnmarshalBinary(v); err != nil {
				return bad(bucketDeleted, k, err)
			}
			st.Deleted[string(k)] = at
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketResults).ForEach(func(k, v []byte) error {
			var r Result
			if err := json.Unmarshal(v, &r); err != nil {
				return bad(bucketResults, k, err)
			}
			if r.Result.CommandID != string(k) {
				return bad(bucketResults, k, fmt.Errorf("record names command %q", r.Result.CommandID))
			}
			st.Results = append(st.Results, r)
			return nil
		})
	})
	if err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			return nil, ce
		}
		return nil, fmt.Errorf("load agent state %s: %w", s.path, err)
	}
	sort.Slice(st.Results, func(i, j int) bool { return st.Results[i].Seq < st.Results[j].Seq })
	return st, nil
}

func validRetireState(s string) bool {
	switch s {
	case protocol.RetireOrdered, protocol.RetireDraining, protocol.RetireDrained, protocol.RetireFailed:
		return true
	}
	return false
}

// Commit writes b in one transaction.
func (s *Store) Commit(b *Batch) error {
	if b.Empty() {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if b.HubID != nil {
			if err := tx.Bucket(bucketMeta).Put(keyHubID, []byte(*b.HubID)); err != nil {
				return err
			}
		}
		vms := tx.Bucket(bucketVMs)
		for id, vm := range b.VMs {
			if vm == nil {
				if err := vms.Delete([]byte(id)); err != nil {
					return err
				}
				continue
			}
			v, err := json.Marshal(vm)
			if err != nil {
				return fmt.Errorf("encode VM %s: %w", id, err)
			}
			if err := vms.Put([]byte(id), v); err != nil {
				return err
			}
		}
		del := tx.Bucket(bucketDeleted)
		for id, at := range b.Deleted {
			if at.IsZero() {
				if err := del.Delete([]byte(id)); err != nil {
					return err
				}
				continue
			}
			v, err := at.MarshalBinary()
			if err != nil {
				return err
			}
			if err := del.Put([]byte(id), v); err != nil {
				return err
			}
		}
		res := tx.Bucket(bucketResults)
		for id, r := range b.Results {
			if r == nil {
				if err := res.Delete([]byte(id)); err != nil {
					return err
				}
				continue
			}
			v, err := json.Marshal(r)
			if err != nil {
				return fmt.Errorf("encode result %s: %w", id, err)
			}
			if err := res.Put([]byte(id), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit agent state %s: %w", s.path, err)
	}
	s.commits.Add(1)
	return nil
}
