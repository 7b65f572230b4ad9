// Package series keeps the hub's own time series (VMs by state, jobs per
// group, cores per site, boots and failures) at three resolutions: the last
// hour in 10 s steps, the last day in 5 min steps and the last 30 days in
// 2 h steps. Each series holds a fixed ring per resolution, so memory is
// bounded by MaxSeries × (360 + 288 + 360) slots whatever the hub's uptime;
// samples are folded into the slot they fall in (gauges averaged, counters
// summed). A Set encodes to bytes for the hub's store and to CSV for people.
package series

import (
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kind says how samples falling in one slot combine.
type Kind uint8

// Kinds.
const (
	// Gauge slots hold the mean of their samples (VMs, jobs, cores).
	Gauge Kind = 1
	// Counter slots hold the sum of their samples (boots, failures: each
	// sample is the increase since the previous one).
	Counter Kind = 2
)

// Tier is one resolution: Len slots of Step each.
type Tier struct {
	Name string
	Step time.Duration
	Len  int
}

// Span is how much time the tier covers.
func (t Tier) Span() time.Duration { return time.Duration(t.Len) * t.Step }

// Tiers are the resolutions kept, finest first.
var Tiers = []Tier{
	{Name: "hour", Step: 10 * time.Second, Len: 360},
	{Name: "day", Step: 5 * time.Minute, Len: 288},
	{Name: "month", Step: 2 * time.Hour, Len: 360},
}

// TierByName finds a tier by its name (hour, day, month).
func TierByName(name string) (int, bool) {
	for i, t := range Tiers {
		if t.Name == name {
			return i, true
		}
	}
	return 0, false
}

// MaxSeries bounds how many series a Set keeps; samples of further series
// are dropped and counted (Dropped).
const MaxSeries = 4096

// MaxNameLen bounds a series name.
const MaxNameLen = 200

// ring is one tier of one series: slot i holds the time last - (n-1-i)
// steps back, rotated so that head is the oldest.
type ring struct {
	last  int64 // start of the newest slot, unix seconds; 0: empty
	head  int
	sum   []float64
	count []uint32
}

func newRing(n int) ring { return ring{sum: make([]float64, n), count: make([]uint32, n)} }

func (r *ring) add(t Tier, at int64, v float64) {
	step := int64(t.Step / time.Second)
	slot := at - at%step
	n := len(r.sum)
	switch {
	case r.last == 0:
		r.last = slot
	case slot > r.last:
		adv := (slot - r.last) / step
		if adv >= int64(n) {
			clear(r.sum)
			clear(r.count)
			r.head = 0
		} else {
			for range adv {
				r.sum[r.head], r.count[r.head] = 0, 0
				r.head = (r.head + 1) % n
			}
		}
		r.last = slot
	case slot <= r.last-int64(n)*step:
		return // older than the ring
	}
	i := (r.head + n - 1 - int((r.last-slot)/step)) % n
	r.sum[i] += v
	r.count[i]++
}

// Point is one slot's value.
type Point struct {
	T time.Time
	V float64
}

func (r *ring) points(t Tier, k Kind) []Point {
	if r.last == 0 {
		return nil
	}
	step := int64(t.Step / time.Second)
	n := len(r.sum)
	out := make([]Point, 0, n)
	for j := range n {
		i := (r.head + j) % n
		if r.count[i] == 0 {
			continue
		}
		v := r.sum[i]
		if k == Gauge {
			v /= float64(r.count[i])
		}
		out = append(out, Point{T: time.Unix(r.last-int64(n-1-j)*step, 0).UTC(), V: v})
	}
	return out
}

type series struct {
	kind  Kind
	tiers []ring
}

// Set is a bounded collection of named series, safe for concurrent use.
type Set struct {
	mu      sync.Mutex
	series  map[string]*series
	dropped uint64
}

// New returns an empty Set.
func New() *Set { return &Set{series: map[string]*series{}} }

// Add records one sample of the named series at a time. A name over
// MaxNameLen, or a new name beyond MaxSeries, is dropped and counted.
func (s *Set) Add(at time.Time, name string, k Kind, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.series[name]
	if se == nil {
		if len(s.series) >= MaxSeries || len(name) > MaxNameLen || name == "" {
			s.dropped++
			return
		}
		se = &series{kind: k, tiers: make([]ring, len(Tiers))}
		for i, t := range Tiers {
			se.tiers[i] = newRing(t.Len)
		}
		s.series[name] = se
	}
	sec := at.Unix()
	for i, t := range Tiers {
		se.tiers[i].add(t, sec, v)
	}
}

// Dropped is how many samples were dropped for the bounds.
func (s *Set) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Names lists the series, sorted.
func (s *Set) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.series))
}

// Points returns a series' slots with data in one tier, oldest first.
func (s *Set) Points(name string, tier int) []Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.series[name]
	if se == nil || tier < 0 || tier >= len(Tiers) {
		return nil
	}
	return se.tiers[tier].points(Tiers[tier], se.kind)
}

// WithPrefix lists the series whose names start with prefix, sorted.
func (s *Set) WithPrefix(prefix string) []string {
	var out []string
	for _, n := range s.Names() {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// WriteCSV writes the named series in one tier as CSV: a time column
// (RFC 3339, UTC) and one column per series; empty where a series has no
// value for that slot.
func (s *Set) WriteCSV(w io.Writer, names []string, tier int) error {
	cols := make([]map[int64]float64, len(names))
	var times []int64
	seen := map[int64]bool{}
	for i, n := range names {
		cols[i] = map[int64]float64{}
		for _, p := range s.Points(n, tier) {
			u := p.T.Unix()
			cols[i][u] = p.V
			if !seen[u] {
				seen[u] = true
				times = append(times, u)
			}
		}
	}
	slices.Sort(times)
	cw := csv.NewWriter(w)
	if err := cw.Write(append([]string{"time"}, names...)); err != nil {
		return err
	}
	row := make([]string, len(names)+1)
	for _, u := range times {
		row[0] = time.Unix(u, 0).UTC().Format(time.RFC3339)
		for i := range names {
			row[i+1] = ""
			if v, ok := cols[i][u]; ok {
				row[i+1] = strconv.FormatFloat(v, 'f', -1, 64)
			}
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// Encoding: magic, version, series count; per series: name length, name,
// kind; per tier: last, head, then Len × (sum float64, count uint32).
var magic = [4]byte{'C', 'S', 'E', 'R'}

const version = 1

// MarshalBinary encodes the set for the hub's store.
func (s *Set) MarshalBinary() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	b.Write(magic[:])
	b.WriteByte(version)
	b.Write(binary.AppendUvarint(nil, uint64(len(s.series))))
	for _, name := range slices.Sorted(maps.Keys(s.series)) {
		se := s.series[name]
		b.Write(binary.AppendUvarint(nil, uint64(len(name))))
		b.WriteString(name)
		b.WriteByte(byte(se.kind))
		for _, r := range se.tiers {
			var buf [8]byte
			binary.LittleEndian.PutUint64(buf[:], uint64(r.last))
			b.Write(buf[:])
			b.Write(binary.AppendUvarint(nil, uint64(r.head)))
			for i := range r.sum {
				binary.LittleEndian.PutUint64(buf[:], math.Float64bits(r.sum[i]))
				b.Write(buf[:])
				binary.LittleEndian.PutUint32(buf[:4], r.count[i])
				b.Write(buf[:4])
			}
		}
	}
	return b.Bytes(), nil
}

// Decode reads a set MarshalBinary wrote. Anything malformed (bad magic,
// an unknown version or kind, a name too long, counts past the bounds,
// truncation) is an error saying what; the hub then starts with no
// history rather than with a wrong one.
func Decode(data []byte) (*Set, error) {
	r := bytes.NewReader(data)
	var m [4]byte
	if _, err := io.ReadFull(r, m[:]); err != nil || m != magic {
		return nil, errors.New("series: not a series file (bad magic)")
	}
	v, err := r.ReadByte()
	if err != nil || v != version {
		return nil, fmt.Errorf("series: version %d, want %d", v, version)
	}
	n, err := binary.ReadUvarint(r)
	if err != nil || n > MaxSeries {
		return nil, fmt.Errorf("series: count %d (max %d): %v", n, MaxSeries, err)
	}
	s := New()
	for k := range n {
		ln, err := binary.ReadUvarint(r)
		if err != nil || ln == 0 || ln > MaxNameLen {
			return nil, fmt.Errorf("series %d: name length %d (1 to %d): %v", k, ln, MaxNameLen, err)
		}
		name := make([]byte, ln)
		if _, err := io.ReadFull(r, name); err != nil {
			return nil, fmt.Errorf("series %d: name: %w", k, err)
		}
		kind, err := r.ReadByte()
		if err != nil || (Kind(kind) != Gauge && Kind(kind) != Counter) {
			return nil, fmt.Errorf("series %q: kind %d", name, kind)
		}
		se := &series{kind: Kind(kind), tiers: make([]ring, len(Tiers))}
		for ti, t := range Tiers {
			rg := newRing(t.Len)
			var buf [8]byte
			if _, err := io.ReadFull(r, buf[:]); err != nil {
				return nil, fmt.Errorf("series %q tier %s: %w", name, t.Name, err)
			}
			rg.last = int64(binary.LittleEndian.Uint64(buf[:]))
			step := int64(t.Step / time.Second)
			if rg.last < 0 || rg.last%step != 0 {
				return nil, fmt.Errorf("series %q tier %s: slot time %d not a multiple of %d s", name, t.Name, rg.last, step)
			}
			head, err := binary.ReadUvarint(r)
			if err != nil || head >= uint64(t.Len) {
				return nil, fmt.Errorf("series %q tier %s: head %d (max %d): %v", name, t.Name, head, t.Len-1, err)
			}
			rg.head = int(head)
			for i := range t.Len {
				if _, err := io.ReadFull(r, buf[:]); err != nil {
					return nil, fmt.Errorf("series %q tier %s: %w", name, t.Name, err)
				}
				rg.sum[i] = math.Float64frombits(binary.LittleEndian.Uint64(buf[:]))
				if _, err := io.ReadFull(r, buf[:4]); err != nil {
					return nil, fmt.Errorf("series %q tier %s: %w", name, t.Name, err)
				}
				rg.count[i] = binary.LittleEndian.Uint32(buf[:4])
				if math.IsNaN(rg.sum[i]) || math.IsInf(rg.sum[i], 0) {
					return nil, fmt.Errorf("series %q tier %s: slot %d is not a number", name, t.Name, i)
				}
			}
			se.tiers[ti] = rg
		}
		if _, dup := s.series[string(name)]; dup {
			return nil, fmt.Errorf("series %q twice", name)
		}
		s.series[string(name)] = se
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("series: %d bytes after the last series", r.Len())
	}
	return s, nil
}
