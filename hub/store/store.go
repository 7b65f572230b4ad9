// Package store keeps the hub's small durable state in one bbolt file: the
// plan counter (so plan ids and server names never repeat across restarts)
// and the lifecycle log of what the hub ordered. Everything else the hub
// knows is soft state, rebuilt from agents and the batch system.
//
// Why bbolt: the state is a few keys and an append-only log, read and
// written by one process. bbolt is pure Go (no cgo), a single file with
// ACID transactions and crash safety through copy-on-write pages, and is
// proven in etcd, Consul and Nomad. SQLite would bring cgo or a large
// translated driver for queries the hub never asks.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	bucketMeta   = []byte("meta")
	bucketEvents = []byte("events")
	bucketHeld   = []byte("held")
	keyPlanSeq   = []byte("plan_seq")
)

// Store is an open state file.
type Store struct {
	db *bolt.DB
}

// Open opens or creates the state file at path. Only one hub may hold it.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open state %s: another hub holds it", path)
		}
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketEvents, bucketHeld} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// NextPlanID returns a new plan number, never returned before.
func (s *Store) NextPlanID() (uint64, error) {
	var n uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if v := b.Get(keyPlanSeq); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		n++
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], n)
		return b.Put(keyPlanSeq, buf[:])
	})
	if err != nil {
		return 0, fmt.Errorf("next plan id: %w", err)
	}
	return n, nil
}

// Event is one entry of the lifecycle log.
type Event struct {
	Seq    uint64    `json:"seq"`
	At     time.Time `json:"at"`
	Site   string    `json:"site,omitempty"`
	VM     string    `json:"vm,omitempty"`
	Plan   string    `json:"plan,omitempty"`
	Kind   string    `json:"kind"`
	Detail string    `json:"detail,omitempty"`
}

// Append adds events to the lifecycle log in one transaction.
func (s *Store) Append(events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		for _, e := range events {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			e.Seq = seq
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], seq)
			if err := b.Put(k[:], v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append lifecycle events: %w", err)
	}
	return nil
}

// Recent returns up to n of the newest events, newest first.
func (s *Store) Recent(n int) ([]Event, error) {
	var out []Event
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Last(); k != nil && len(out) < n; k, v = c.Prev() {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("event %x: %w", k, err)
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read lifecycle events: %w", err)
	}
	return out, nil
}

// SetHeld puts a VM (by server id) under manual control, or releases it.
// The planner never touches a held VM.
func (s *Store) SetHeld(vmID string, held bool) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHeld)
		if held {
			return b.Put([]byte(vmID), []byte(time.Now().UTC().Format(time.RFC3339)))
		}
		return b.Delete([]byte(vmID))
	})
	if err != nil {
		return fmt.Errorf("hold %s: %w", vmID, err)
	}
	return nil
}

// Held returns the ids of VMs under manual control.
func (s *Store) Held() (map[string]bool, error) {
	out := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHeld).ForEach(func(k, _ []byte) error {
			out[string(k)] = true
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read held VMs: %w", err)
	}
	return out, nil
}
