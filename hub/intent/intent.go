// Package intent holds what the hub must not lose: what it ordered and why.
// Names of servers in flight, retirement orders and their deadlines, manual
// holds, when each VM went into error, boot failures and over-quota times,
// the plan counter and the lifecycle log. Everything else the hub knows
// (inventories, the pool, the queue) is observation, rebuilt after a
// restart from agents and the batch system.
//
// State changes only through Apply, one Change at a time; a Tx records the
// changes it makes so that the hub can make them durable in one write per
// cycle (hub/store) and, with several hubs, replicate them. Restoring from
// disk, applying on a replica and changing the state on the leader are the
// same code path.
//
// A State has one owner (the hub's control loop); it is not safe for
// concurrent use. Readers get copies.
package intent

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/canopy-grid/canopy/hub/imageplan"
	"github.com/canopy-grid/canopy/hub/planner"
)

// Table names one kind of record.
type Table string

// Tables.
const (
	TableMeta    Table = "meta"    // plan_seq
	TablePending Table = "pending" // PendingBoot by server name
	TableRetire  Table = "retire"  // RetireOrder by VM id
	TableHold    Table = "hold"    // Hold by VM id
	TableError   Table = "error"   // ErrorMark by VM id
	TableHistory Table = "history" // planner.HistoryState under "all"
	TableEvents  Table = "events"  // Event by zero-padded sequence number
	TableSite    Table = "site"    // SiteMode by site name
	// TableImageWant holds the rows of the desired image matrix set
	// through the API (imageplan.Want by image name).
	TableImageWant Table = "image_want"
)

// Tables lists every table, in the order a store creates them.
var Tables = []Table{TableMeta, TablePending, TableRetire, TableHold, TableError, TableHistory, TableEvents, TableSite, TableImageWant}

// Change is one record written (Value set) or deleted (Value nil). Values
// are JSON: readable with any bbolt tool, and stable across versions that
// add fields.
type Change struct {
	Table Table  `json:"t"`
	Key   string `json:"k"`
	Value []byte `json:"v,omitempty"`
}

// PendingBoot is a server the hub ordered that its cloud does not list yet.
type PendingBoot struct {
	Name      string `json:"name"`
	Site      string `json:"site"`
	Group     string `json:"group"`
	VMType    string `json:"vm_type"`
	Flavor    string `json:"flavor"`
	Image     string `json:"image,omitempty"`
	PlanID    string `json:"plan_id"`
	CommandID string `json:"command_id"`
	Cpus      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	// KeepAlive is the jobs' keep-alive request the VM is booted for.
	KeepAlive time.Duration `json:"keep_alive,omitempty"`
	// MaxLifetime is the jobs' maximum lifetime request the VM is booted
	// for.
	MaxLifetime time.Duration `json:"max_lifetime,omitempty"`
	OrderedAt   time.Time     `json:"ordered_at"`
	// AckedAt is when the agent reported the server created; zero until.
	AckedAt time.Time `json:"acked_at,omitzero"`
}

// RetireOrder is the hub's order that a VM finish its jobs and go.
type RetireOrder struct {
	VMID string `json:"vm_id"`
	Site string `json:"site"`
	Name string `json:"name,omitempty"`
	// At is when it was ordered; Deadline when running jobs may be cut.
	At       time.Time `json:"at"`
	Deadline time.Time `json:"deadline"`
	Rule     string    `json:"rule,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	PlanID   string    `json:"plan_id,omitempty"`
}

// Hold puts a VM under manual control: the planner never touches it.
type Hold struct {
	VMID   string    `json:"vm_id"`
	Site   string    `json:"site,omitempty"`
	Name   string    `json:"name,omitempty"`
	At     time.Time `json:"at"`
	By     string    `json:"by,omitempty"`
	Reason string    `json:"reason,omitempty"`
}

// Active reports whether the hold still holds at now: it expires maxAge
// after it was put (or last renewed), unless maxAge is zero or negative
// (holds never expire).
func (h Hold) Active(now time.Time, maxAge time.Duration) bool {
	return maxAge <= 0 || now.Before(h.At.Add(maxAge))
}

// ErrorMark is when the hub first saw a VM in error (or stopped) without a
// break since, and the cloud's fault message.
type ErrorMark struct {
	VMID  string    `json:"vm_id"`
	Site  string    `json:"site"`
	Since time.Time `json:"since"`
	Fault string    `json:"fault,omitempty"`
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

// Site modes an admin sets at run time (hub cloud pause|disable|drain).
const (
	// ModePaused: no new boots; the site's VMs stay.
	ModePaused = "paused"
	// ModeDisabled: no new boots; idle VMs are retired (as the config's
	// disabled: true).
	ModeDisabled = "disabled"
	// ModeDraining: disabled, and every Canopy VM there was ordered to
	// retire (finish its jobs by the retire deadline, then go).
	ModeDraining = "draining"
)

// SiteMode is an admin's run-time setting for one site, over what the
// config says; resuming the site drops it.
type SiteMode struct {
	Site string    `json:"site"`
	Mode string    `json:"mode"`
	At   time.Time `json:"at"`
	By   string    `json:"by,omitempty"`
}

// State is the hub's durable intent.
type State struct {
	PlanSeq uint64
	Pending map[string]PendingBoot
	Retire  map[string]RetireOrder
	Hold    map[string]Hold
	Error   map[string]ErrorMark
	// Sites are admins' run-time site modes, by site name.
	Sites   map[string]SiteMode
	History planner.HistoryState
	// Events are the newest lifecycle events, oldest first (AddEvent keeps
	// at most MaxEvents).
	Events   []Event
	EventSeq uint64
	// ImageWants are the desired image matrix's rows set through the API,
	// by image name.
	ImageWants map[string]imageplan.Want
}

// MaxEvents bounds the lifecycle log kept in the state (and on disk).
const MaxEvents = 10000

// New returns an empty State.
func New() *State {
	return &State{Pending: map[string]PendingBoot{}, Retire: map[string]RetireOrder{}, Hold: map[string]Hold{},
		Error: map[string]ErrorMark{}, Sites: map[string]SiteMode{}, ImageWants: map[string]imageplan.Want{}}
}

// Apply makes one change. An undecodable value is an error naming the
// table and key; the state is then unchanged.
func (s *State) Apply(c Change) error {
	del := c.Value == nil
	var err error
	switch c.Table {
	case TableMeta:
		if c.Key != "plan_seq" {
			return fmt.Errorf("intent: unknown meta key %q", c.Key)
		}
		if !del {
			var n uint64
			if err = json.Unmarshal(c.Value, &n); err == nil {
				s.PlanSeq = n
			}
		}
	case TablePending:
		err = applyMap(s.Pending, c)
	case TableRetire:
		err = applyMap(s.Retire, c)
	case TableHold:
		err = applyMap(s.Hold, c)
	case TableError:
		err = applyMap(s.Error, c)
	case TableSite:
		err = applyMap(s.Sites, c)
	case TableImageWant:
		err = applyMap(s.ImageWants, c)
	case TableHistory:
		if del {
			s.History = planner.HistoryState{}
		} else {
			var h planner.HistoryState
			if err = json.Unmarshal(c.Value, &h); err == nil {
				s.History = h
			}
		}
	case TableEvents:
		if del {
			if len(s.Events) > 0 && EventKey(s.Events[0].Seq) == c.Key {
				s.Events = s.Events[1:] // the usual case: the oldest goes
			} else {
				s.Events = slices.DeleteFunc(s.Events, func(e Event) bool { return EventKey(e.Seq) == c.Key })
			}
			break
		}
		var e Event
		if err = json.Unmarshal(c.Value, &e); err == nil {
			s.Events = append(s.Events, e)
			s.EventSeq = max(s.EventSeq, e.Seq)
		}
	default:
		return fmt.Errorf("intent: unknown table %q", c.Table)
	}
	if err != nil {
		return fmt.Errorf("intent: %s/%s: %w", c.Table, c.Key, err)
	}
	return nil
}

func applyMap[T any](m map[string]T, c Change) error {
	if c.Value == nil {
		delete(m, c.Key)
		return nil
	}
	var v T
	if err := json.Unmarshal(c.Value, &v); err != nil {
		return err
	}
	m[c.Key] = v
	return nil
}

// EventKey is an event's key: its sequence number, zero-padded so that keys
// sort in order.
func EventKey(seq uint64) string {
	k := strconv.FormatUint(seq, 10)
	for len(k) < 20 {
		k = "0" + k
	}
	return k
}

// Clone returns a deep copy, for readers.
func (s *State) Clone() *State {
	c := *s
	c.Pending = maps.Clone(s.Pending)
	c.Retire = maps.Clone(s.Retire)
	c.Hold = maps.Clone(s.Hold)
	c.Error = maps.Clone(s.Error)
	c.Sites = maps.Clone(s.Sites)
	c.ImageWants = maps.Clone(s.ImageWants)
	c.History = planner.HistoryState{Failures: slices.Clone(s.History.Failures),
		CloudOver: maps.Clone(s.History.CloudOver), GroupOver: maps.Clone(s.History.GroupOver)}
	c.Events = slices.Clone(s.Events)
	return &c
}

// Tx records changes made to a State, to be made durable together.
type Tx struct {
	s       *State
	changes []Change
}

// Begin starts recording changes to s.
func (s *State) Begin() *Tx { return &Tx{s: s} }

// State is the state the transaction changes (already changed).
func (tx *Tx) State() *State { return tx.s }

// Changes returns the changes made so far, in order.
func (tx *Tx) Changes() []Change { return tx.changes }

// Len is how many changes were made.
func (tx *Tx) Len() int { return len(tx.changes) }

// Reset forgets the recorded changes (after they were made durable).
func (tx *Tx) Reset() { tx.changes = tx.changes[:0] }

func (tx *Tx) put(t Table, key string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Every record type marshals; a failure here is a programming error.
		panic(fmt.Sprintf("intent: encode %s/%s: %v", t, key, err))
	}
	tx.apply(Change{Table: t, Key: key, Value: b})
}

func (tx *Tx) apply(c Change) {
	if err := tx.s.Apply(c); err != nil {
		panic(err) // values come from put: always decodable
	}
	tx.changes = append(tx.changes, c)
}

func (tx *Tx) del(t Table, key string) { tx.apply(Change{Table: t, Key: key}) }

// NextPlanID advances the plan counter and returns the new plan's id.
func (tx *Tx) NextPlanID() string {
	n := tx.s.PlanSeq + 1
	tx.put(TableMeta, "plan_seq", n)
	return fmt.Sprintf("p%d", n)
}

// PutPending records a boot in flight.
func (tx *Tx) PutPending(p PendingBoot) { tx.put(TablePending, p.Name, p) }

// DropPending forgets a boot in flight.
func (tx *Tx) DropPending(name string) {
	if _, ok := tx.s.Pending[name]; ok {
		tx.del(TablePending, name)
	}
}

// PutRetire records a retirement order.
func (tx *Tx) PutRetire(r RetireOrder) { tx.put(TableRetire, r.VMID, r) }

// DropRetire forgets a retirement order.
func (tx *Tx) DropRetire(vmID string) {
	if _, ok := tx.s.Retire[vmID]; ok {
		tx.del(TableRetire, vmID)
	}
}

// PutHold puts a VM under manual control.
func (tx *Tx) PutHold(h Hold) { tx.put(TableHold, h.VMID, h) }

// DropHold releases a VM.
func (tx *Tx) DropHold(vmID string) {
	if _, ok := tx.s.Hold[vmID]; ok {
		tx.del(TableHold, vmID)
	}
}

// PutError records a VM's error mark.
func (tx *Tx) PutError(e ErrorMark) { tx.put(TableError, e.VMID, e) }

// DropError forgets a VM's error mark.
func (tx *Tx) DropError(vmID string) {
	if _, ok := tx.s.Error[vmID]; ok {
		tx.del(TableError, vmID)
	}
}

// PutSite records an admin's mode for a site.
func (tx *Tx) PutSite(m SiteMode) { tx.put(TableSite, m.Site, m) }

// DropSite forgets an admin's mode for a site (back to the config).
func (tx *Tx) DropSite(site string) {
	if _, ok := tx.s.Sites[site]; ok {
		tx.del(TableSite, site)
	}
}

// SetHistory records the planner's history when it changed.
func (tx *Tx) SetHistory(h planner.HistoryState) {
	if historyEqual(tx.s.History, h) {
		return
	}
	tx.put(TableHistory, "all", h)
}

func historyEqual(a, b planner.HistoryState) bool {
	return slices.Equal(a.Failures, b.Failures) && maps.EqualFunc(a.CloudOver, b.CloudOver, time.Time.Equal) &&
		maps.EqualFunc(a.GroupOver, b.GroupOver, time.Time.Equal) && slices.Equal(a.Preemptions, b.Preemptions)
}

// AddEvent appends an event to the lifecycle log (its Seq is assigned) and
// drops the oldest beyond MaxEvents.
func (tx *Tx) AddEvent(e Event) Event {
	for len(tx.s.Events) >= MaxEvents {
		tx.del(TableEvents, EventKey(tx.s.Events[0].Seq))
	}
	e.Seq = tx.s.EventSeq + 1
	e.At = e.At.UTC()
	tx.put(TableEvents, EventKey(e.Seq), e)
	return e
}

// PruneEvents drops events older than before.
func (tx *Tx) PruneEvents(before time.Time) {
	for len(tx.s.Events) > 0 && tx.s.Events[0].At.Before(before) {
		tx.del(TableEvents, EventKey(tx.s.Events[0].Seq))
	}
}

// PutImageWant records a row of the desired image matrix.
func (tx *Tx) PutImageWant(w imageplan.Want) { tx.put(TableImageWant, w.Ref.Name, w) }

// DropImageWant forgets a row of the desired image matrix.
func (tx *Tx) DropImageWant(name string) {
	if _, ok := tx.s.ImageWants[name]; ok {
		tx.del(TableImageWant, name)
	}
}
