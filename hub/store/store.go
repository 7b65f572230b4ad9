// Package store keeps the hub's durable intent (hub/intent) in one bbolt
// file: one bucket per intent table, one key per record. The hub loads it
// whole at start and commits each cycle's changes in one transaction: one
// fsync per cycle however many VMs the cycle touched.
//
// Why bbolt: the state is a few thousand small records read and written by
// one process. bbolt is pure Go (no cgo), a single file with ACID
// transactions and crash safety through copy-on-write pages, and is proven
// in etcd, Consul and Nomad. SQLite would bring cgo or a large translated
// driver for queries the hub never asks.
package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/canopy-grid/canopy/hub/intent"
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
		for _, t := range intent.Tables {
			if _, err := tx.CreateBucketIfNotExists([]byte(t)); err != nil {
				return err
			}
		}
		if _, err := tx.CreateBucketIfNotExists([]byte(blobBucket)); err != nil {
			return err
		}
		if err := migrate(tx); err != nil {
			return err
		}
		return renameCloudToSite(tx)
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// migrate converts the layout of the first releases (an 8-byte plan
// counter, a "held" bucket of timestamps) to intent records.
func migrate(tx *bolt.Tx) error {
	meta := tx.Bucket([]byte(intent.TableMeta))
	if v := meta.Get([]byte("plan_seq")); len(v) == 8 {
		b, _ := json.Marshal(binary.BigEndian.Uint64(v))
		if err := meta.Put([]byte("plan_seq"), b); err != nil {
			return err
		}
	}
	old := tx.Bucket([]byte("held"))
	if old == nil {
		return nil
	}
	holds := tx.Bucket([]byte(intent.TableHold))
	err := old.ForEach(func(k, v []byte) error {
		at, _ := time.Parse(time.RFC3339, string(v))
		b, err := json.Marshal(intent.Hold{VMID: string(k), At: at, Reason: "held before the upgrade"})
		if err != nil {
			return err
		}
		return holds.Put(k, b)
	})
	if err != nil {
		return err
	}
	return tx.DeleteBucket([]byte("held"))
}

// siteKeysDone marks, in the blobs bucket (the store's own, not intent),
// a store whose records name their site "site": renameCloudToSite has run.
const siteKeysDone = "schema/site_keys"

// renameCloudToSite rewrites, once per store, records written before the
// intent tables named their site "cloud" (see Terms in
// docs/architecture.md): the key becomes "site".
func renameCloudToSite(tx *bolt.Tx) error {
	done := tx.Bucket([]byte(blobBucket))
	if done.Get([]byte(siteKeysDone)) != nil {
		return nil
	}
	for _, t := range []intent.Table{intent.TablePending, intent.TableRetire, intent.TableHold, intent.TableError, intent.TableEvents} {
		b := tx.Bucket([]byte(t))
		type rewrite struct{ k, v []byte }
		var rewrites []rewrite
		err := b.ForEach(func(k, v []byte) error {
			if !bytes.Contains(v, []byte(`"cloud"`)) {
				return nil
			}
			var rec map[string]json.RawMessage
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("%s/%s: %w", t, k, err)
			}
			c, ok := rec["cloud"]
			if !ok {
				return nil
			}
			delete(rec, "cloud")
			if _, has := rec["site"]; !has {
				rec["site"] = c
			}
			nv, err := json.Marshal(rec)
			if err != nil {
				return fmt.Errorf("%s/%s: %w", t, k, err)
			}
			rewrites = append(rewrites, rewrite{k: slices.Clone(k), v: nv})
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range rewrites {
			if err := b.Put(r.k, r.v); err != nil {
				return err
			}
		}
	}
	return done.Put([]byte(siteKeysDone), []byte("true"))
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Load reads the whole intent. A record that does not decode is an error
// naming it: the hub refuses to start on a state it cannot read rather
// than forget what it ordered.
func (s *Store) Load() (*intent.State, error) {
	st := intent.New()
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, t := range intent.Tables {
			err := tx.Bucket([]byte(t)).ForEach(func(k, v []byte) error {
				return st.Apply(intent.Change{Table: t, Key: string(k), Value: v})
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load hub state: %w", err)
	}
	return st, nil
}

// Commit makes changes durable, in order, in one transaction.
func (s *Store) Commit(changes []intent.Change) error {
	if len(changes) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, c := range changes {
			b := tx.Bucket([]byte(c.Table))
			if b == nil {
				return fmt.Errorf("unknown table %q", c.Table)
			}
			var err error
			if c.Value == nil {
				err = b.Delete([]byte(c.Key))
			} else {
				err = b.Put([]byte(c.Key), c.Value)
			}
			if err != nil {
				return fmt.Errorf("%s/%s: %w", c.Table, c.Key, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit hub state (%d changes): %w", len(changes), err)
	}
	return nil
}

// blobBucket holds what the hub keeps besides its intent, one value a
// key: its time series and its accounting ledger. They are observations
// the hub made itself, not intent: losing one loses history, never a
// decision.
const blobBucket = "blobs"

// PutBlob stores one value under key (its own transaction).
func (s *Store) PutBlob(key string, value []byte) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(blobBucket)).Put([]byte(key), value)
	})
	if err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	return nil
}

// Blob returns the value stored under key, nil if none.
func (s *Store) Blob(key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte(blobBucket)).Get([]byte(key)); v != nil {
			out = append([]byte{}, v...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return out, nil
}

// Stats counts the file's commits, for metrics and benchmarks.
func (s *Store) Stats() bolt.TxStats {
	return s.db.Stats().TxStats
}
