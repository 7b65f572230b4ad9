package htcondor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/classad"
)

// queueJobs is the size of the benchmark queue.
const queueJobs = 300000

// jobTemplate is one recorded job ad, cut around the values that vary per
// job: ClusterId, JobStatus and ProcId.
type jobTemplate struct {
	// parts are the text before ClusterId's value, between JobStatus's and
	// ProcId's, and between ClusterId's and JobStatus's (keys are sorted:
	// ClusterId, JobStatus, ProcId); tail is the rest.
	parts [3][]byte
	tail  []byte
}

var benchGroups = []string{"atlas", "cms", "lhcb", "alice", "belle", "dune", "icecube", "ligo"}

// queueTemplates renders the recorded jobs of 10_condor_q-json_all-states as
// condor_q -json would print them with the Source's projection, once per
// group (+CanopyGroup), in HTCondor's layout (keys in case-insensitive
// order, two-space indent).
func queueTemplates(tb testing.TB, s *Source) []jobTemplate {
	tb.Helper()
	data, err := os.ReadFile("testdata/recorded/10_condor_q-json_all-states.out")
	if err != nil {
		tb.Fatal(err)
	}
	var ads []map[string]json.RawMessage
	if err := json.Unmarshal(data, &ads); err != nil {
		tb.Fatal(err)
	}
	var out []jobTemplate
	seen := map[string]bool{}
	for _, g := range benchGroups {
		for _, ad := range ads {
			cluster := string(ad["ClusterId"])
			if seen[g+cluster] || string(ad["JobStatus"]) == "5" {
				continue
			}
			seen[g+cluster] = true
			ad["CanopyGroup"] = json.RawMessage(strconv.Quote(g))
			var keys []string
			for k := range ad {
				if _, ok := s.proj.index[strings.ToLower(k)]; ok {
					keys = append(keys, k)
				}
			}
			slices.SortFunc(keys, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
			var t jobTemplate
			var cur bytes.Buffer
			cur.WriteString("{\n")
			for i, k := range keys {
				fmt.Fprintf(&cur, "  %q: ", k)
				switch k {
				case "ClusterId":
					t.parts[0] = append([]byte(nil), cur.Bytes()...)
					cur.Reset()
				case "ProcId":
					t.parts[1] = append([]byte(nil), cur.Bytes()...)
					cur.Reset()
				case "JobStatus":
					t.parts[2] = append([]byte(nil), cur.Bytes()...)
					cur.Reset()
				default:
					var v bytes.Buffer
					if err := json.Compact(&v, ad[k]); err != nil {
						tb.Fatal(err)
					}
					cur.Write(v.Bytes()) // as recorded, "\/Expr(...)\/" included
				}
				if i < len(keys)-1 {
					cur.WriteString(",\n")
				} else {
					cur.WriteString("\n}")
				}
			}
			t.tail = append([]byte(nil), cur.Bytes()...)
			out = append(out, t)
		}
	}
	return out
}

// queueReader generates a queue of n jobs from the templates: clusters of
// 1000 jobs, each cluster one template (so 40 shapes at most), 90 % idle.
// It renders jobs as they are read, so the queue never sits in memory,
// as condor_q's output through a pipe would not.
type queueReader struct {
	tmpl []jobTemplate
	n, i int
	buf  []byte
	off  int
	done bool
}

func newQueueReader(tmpl []jobTemplate, n int) *queueReader {
	return &queueReader{tmpl: tmpl, n: n, buf: append(make([]byte, 0, 64<<10), "[\n"...)}
}

func (r *queueReader) Read(p []byte) (int, error) {
	for r.off == len(r.buf) {
		if r.done {
			return 0, io.EOF
		}
		r.buf, r.off = r.buf[:0], 0
		for len(r.buf) < 32<<10 && r.i < r.n {
			if r.i > 0 {
				r.buf = append(r.buf, "\n,\n"...)
			}
			cluster := r.i/1000 + 1
			t := r.tmpl[cluster%len(r.tmpl)]
			status := 1
			if r.i%10 == 0 {
				status = 2
			}
			// Keys are sorted: ClusterId ... JobStatus ... ProcId.
			r.buf = append(r.buf, t.parts[0]...)
			r.buf = strconv.AppendInt(r.buf, int64(cluster), 10)
			r.buf = append(r.buf, t.parts[2]...)
			r.buf = strconv.AppendInt(r.buf, int64(status), 10)
			r.buf = append(r.buf, t.parts[1]...)
			r.buf = strconv.AppendInt(r.buf, int64(r.i%1000), 10)
			r.buf = append(r.buf, t.tail...)
			r.i++
		}
		if r.i == r.n {
			r.buf = append(r.buf, "\n]\n"...)
			r.done = true
		}
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}

// measure runs f b.N times and reports CPU time per run (user + system,
// which the other work on this shared machine does not inflate as it does
// wall time) and the peak live heap above the start, sampled every 2 ms.
func measure(b *testing.B, f func()) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > base && m.HeapInuse-base > peak.Load() {
				peak.Store(m.HeapInuse - base)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f()
	}
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	close(stop)
	wg.Wait()
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) / time.Duration(b.N)
	b.ReportMetric(float64(cpu.Milliseconds()), "cpu-ms/op")
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MB")
}

// BenchmarkQueue300k reads a 300,000-job condor_q -json queue (projection,
// recorded job ads varied) into shapes: the whole per-schedd path of Poll.
func BenchmarkQueue300k(b *testing.B) {
	s := testSource(b)
	tmpl := queueTemplates(b, s)
	b.ReportAllocs()
	var shapes, sigs int
	measure(b, func() {
		q := s.newQueue()
		if err := q.read(newQueueReader(tmpl, queueJobs)); err != nil {
			b.Fatal(err)
		}
		if q.idle+q.running != queueJobs {
			b.Fatalf("read %d jobs", q.idle+q.running)
		}
		shapes, sigs = len(q.shapes), len(q.sigs)
	})
	b.ReportMetric(float64(shapes), "shapes")
	b.ReportMetric(float64(sigs), "signatures")
}

// BenchmarkQueueBytes reports the size of the generated queue and what
// generating it costs (to tell it from the decoders' own cost).
func BenchmarkQueueBytes(b *testing.B) {
	s := testSource(b)
	tmpl := queueTemplates(b, s)
	var n int64
	measure(b, func() {
		var err error
		if n, err = io.Copy(io.Discard, newQueueReader(tmpl, queueJobs)); err != nil {
			b.Fatal(err)
		}
	})
	b.ReportMetric(float64(n)/(1<<20), "MB")
}

// BenchmarkStreamDecoders compares ways to decode the same 300,000-job
// output, without the shape work: the stream scanner the Source uses,
// encoding/json's Decoder over the array (token, then each ad as a
// RawMessage), and the naive way (each ad into a map, then
// classad.AdFromJSON).
func BenchmarkStreamDecoders(b *testing.B) {
	s := testSource(b)
	tmpl := queueTemplates(b, s)
	b.Run("scanner", func(b *testing.B) {
		b.ReportAllocs()
		measure(b, func() {
			st := newAdStream(newQueueReader(tmpl, queueJobs), 0)
			n := 0
			for {
				_, err := st.next()
				if err == io.EOF {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
				n++
			}
			if n != queueJobs {
				b.Fatalf("%d ads", n)
			}
		})
	})
	b.Run("json.Decoder-RawMessage", func(b *testing.B) {
		b.ReportAllocs()
		measure(b, func() {
			dec := json.NewDecoder(newQueueReader(tmpl, queueJobs))
			if _, err := dec.Token(); err != nil {
				b.Fatal(err)
			}
			var raw json.RawMessage
			n := 0
			for dec.More() {
				if err := dec.Decode(&raw); err != nil {
					b.Fatal(err)
				}
				n++
			}
			if _, err := dec.Token(); err != nil || n != queueJobs {
				b.Fatal(err, n)
			}
		})
	})
	b.Run("json.Decoder-map+AdFromJSON", func(b *testing.B) {
		b.ReportAllocs()
		measure(b, func() {
			dec := json.NewDecoder(newQueueReader(tmpl, queueJobs))
			dec.UseNumber()
			if _, err := dec.Token(); err != nil {
				b.Fatal(err)
			}
			n := 0
			for dec.More() {
				var m map[string]any
				if err := dec.Decode(&m); err != nil {
					b.Fatal(err)
				}
				if _, err := classad.AdFromJSON(m); err != nil {
					b.Fatal(err)
				}
				n++
			}
			if n != queueJobs {
				b.Fatal(n)
			}
		})
	})
}

// afLines generates the same queue as condor_q -af:j would print it
// (evaluated values, one job per line): job id, JobStatus, group,
// RequestCpus, RequestMemory, RequestDisk, VMType. It carries no
// Requirements: -af cannot print an expression that contains spaces as one
// field.
func afLines(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		cluster := i/1000 + 1
		status := 1
		if i%10 == 0 {
			status = 2
		}
		fmt.Fprintf(&b, "%d.%d %d %s %d %d %d %s\n", cluster, i%1000, status, benchGroups[cluster%len(benchGroups)],
			1+cluster%3, 512*(1+cluster%4), 1048576, []string{"centos7", "ubuntu22", "undefined"}[cluster%3])
	}
	return b.Bytes()
}

// BenchmarkFormatAF parses the -af:j form of the queue and counts jobs by
// their fields: the cheapest parse -af allows (a lower bound for that
// format), to set against BenchmarkQueue300k.
func BenchmarkFormatAF(b *testing.B) {
	data := afLines(queueJobs)
	b.ReportMetric(float64(len(data))/(1<<20), "MB")
	b.ReportAllocs()
	measure(b, func() {
		counts := map[string]int{}
		rest := data
		for len(rest) > 0 {
			i := bytes.IndexByte(rest, '\n')
			line := rest[:i]
			rest = rest[i+1:]
			sp := bytes.IndexByte(line, ' ')
			fields := bytes.Fields(line[sp+1:])
			if len(fields) != 6 {
				b.Fatal("bad line")
			}
			if _, err := strconv.Atoi(string(fields[0])); err != nil {
				b.Fatal(err)
			}
			counts[string(line[sp+1:])]++
		}
	})
}

// BenchmarkRequirements measures evaluations per second of a typical job
// Requirements (recorded job 2.0: VMType, Memory, Arch, OpSys, Disk, Cpus,
// FileSystemDomain clauses) against a VM type's machine ad.
func BenchmarkRequirements(b *testing.B) {
	s := testSource(b)
	job := recordedJobAds(b, s)["2.0"]
	machine := s.typeByName["ubuntu22"].machineAd(s.cfg.Attributes, "alice", size{2, 4096, 41943040})
	b.Run("Requirements", func(b *testing.B) {
		b.ReportAllocs()
		start := time.Now()
		for b.Loop() {
			if !evalEnv.EvalAttr(job, "Requirements", machine).IsTrue() {
				b.Fatal("no match")
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "evals/s")
	})
	b.Run("Match", func(b *testing.B) {
		b.ReportAllocs()
		start := time.Now()
		for b.Loop() {
			if !classad.Match(job, machine) {
				b.Fatal("no match")
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "matches/s")
	})
}

// TestQueueGenerator checks the benchmark's generated queue: valid, with
// the recorded jobs' shapes per group.
func TestQueueGenerator(t *testing.T) {
	s := testSource(t)
	tmpl := queueTemplates(t, s)
	q := s.newQueue()
	if err := q.read(newQueueReader(tmpl, 50000)); err != nil {
		t.Fatal(err)
	}
	if q.idle != 45000 || q.running != 5000 {
		t.Errorf("idle %d running %d", q.idle, q.running)
	}
	if len(q.unmatch) != 0 || len(q.shapes) < 20 {
		t.Errorf("%d shapes, unmatchable %v", len(q.shapes), q.unmatch)
	}
}
