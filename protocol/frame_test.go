package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/images"
)

func sampleInventory(n int) Inventory {
	inv := Inventory{Seq: 7, TakenAt: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC),
		Flavors: []Flavor{{ID: "f1", Name: "c2.small", VCPUs: 2, RAMMiB: 4096, DiskGiB: 20}},
		Limits:  Limits{MaxCores: 100, MaxRAMMiB: -1, MaxInstances: 50, UsedCores: 8, UsedInstances: 4},
		Images: []images.Image{{ID: "i1", Name: "worker-el9", SizeBytes: 1 << 30, Status: images.StatusActive,
			Checksums: []images.Checksum{{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}}}},
	}
	for i := range n {
		inv.VMs = append(inv.VMs, VM{ID: fmt.Sprintf("0000-%04d", i), Name: fmt.Sprintf("canopy-west-p1-0-%d", i), Flavor: "c2.small",
			Group: "atlas", VMType: "el9", PlanID: "p1", State: VMActive, Ready: true,
			CreatedAt: time.Date(2026, 11, 22, 11, 0, 0, 0, time.UTC)})
	}
	return inv
}

func TestRoundTrip(t *testing.T) {
	msgs := []Message{
		Hello{Versions: []uint16{1}, Site: "west", Software: "dev"},
		Welcome{Version: 1, HubID: "hub", HeartbeatEvery: time.Second, InventoryEvery: 30 * time.Second},
		sampleInventory(3),
		Command{ID: "c1", Op: CmdBoot, Boot: &BootCommand{PlanID: "p1", Group: "atlas", VMType: "el9", Flavor: "c2", Names: []string{"a", "b"}}},
		Command{ID: "c2", Op: CmdRetire, Retire: &RetireCommand{VMIDs: []string{"x"}, Deadline: time.Hour, Reason: "idle"}},
		Command{ID: "c3", Op: CmdDelete, Delete: &DeleteCommand{VMIDs: []string{"x"}}},
		Result{CommandID: "c1", OK: false, Class: ErrClassQuota, Error: "quota exceeded", VMIDs: []string{"x"}},
		Heartbeat{Seq: 9, SentAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)},
		Error{Code: CodeMalformed, Message: "bad"},
		SquidList{Upstream: "cvmfs", Proxies: []SquidProxy{{Name: "s1", Address: "10.0.0.1:3128", Cost: 0.1}}, At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
	}
	for _, m := range msgs {
		t.Run(m.Kind().String(), func(t *testing.T) {
			b, err := Encode(nil, Version, m)
			if err != nil {
				t.Fatal(err)
			}
			h, got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if h.Kind != m.Kind() || h.Version != Version {
				t.Fatalf("header %+v", h)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip changed the message:\n got %#v\nwant %#v", got, m)
			}
		})
	}
}

func frame(version, kind byte, body []byte) []byte {
	b := []byte{0xCA, 0x70, version, kind, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:], uint32(len(body)))
	return append(b, body...)
}

func mustEncode(t testing.TB, m Message) []byte {
	b, err := Encode(nil, Version, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBadInput(t *testing.T) {
	hb := mustEncode(t, Heartbeat{Seq: 1})
	huge := make([]byte, 8)
	copy(huge, []byte{0xCA, 0x70, 1, byte(KindHeartbeat)})
	binary.BigEndian.PutUint32(huge[4:], MaxFrameSize+1)
	cases := []struct {
		name  string
		input []byte
		code  ErrorCode
	}{
		{"truncated header", hb[:5], CodeMalformed},
		{"bad magic", append([]byte{0xDE, 0xAD}, hb[2:]...), CodeMalformed},
		{"oversize", huge, CodeTooLarge},
		{"truncated body", hb[:len(hb)-2], CodeMalformed},
		{"unknown kind", frame(1, 99, []byte{0xa0}), CodeUnknownKind},
		{"wrong version", frame(9, byte(KindHeartbeat), hb[HeaderSize:]), CodeBadVersion},
		{"garbage body", frame(1, byte(KindHeartbeat), []byte{0xff, 0x00, 0x13}), CodeMalformed},
		{"wrong field type", frame(1, byte(KindHeartbeat), []byte{0xa1, 0x63, 's', 'e', 'q', 0x61, 'x'}), CodeMalformed},
		{"duplicate key", frame(1, byte(KindHeartbeat), []byte{0xa2, 0x63, 's', 'e', 'q', 0x01, 0x63, 's', 'e', 'q', 0x02}), CodeMalformed},
		{"indefinite length", frame(1, byte(KindHeartbeat), []byte{0xbf, 0xff}), CodeMalformed},
		{"hello without site", mustEncode(t, Hello{Versions: []uint16{1}}), CodeMalformed},
		{"command without body", mustEncode(t, Command{ID: "x", Op: CmdBoot}), CodeMalformed},
		{"command with two bodies", mustEncode(t, Command{ID: "x", Op: CmdDelete, Delete: &DeleteCommand{}, Retire: &RetireCommand{}}), CodeMalformed},
		{"boot naming nothing", mustEncode(t, Command{ID: "x", Op: CmdBoot, Boot: &BootCommand{}}), CodeMalformed},
		{"result without command", mustEncode(t, Result{}), CodeMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Through a Conn, as a session reads it.
			c := NewConn(bytes.NewReader(tc.input), io.Discard)
			_, err := c.Recv()
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("Recv error = %v, want a FrameError", err)
			}
			if fe.Code != tc.code {
				t.Fatalf("code = %s (%v), want %s", fe.Code, err, tc.code)
			}
		})
	}
}

// TestErrorFrameOnBadInput checks the receiver's answer: an Error frame that
// names what was wrong.
func TestErrorFrameOnBadInput(t *testing.T) {
	var out bytes.Buffer
	c := NewConn(bytes.NewReader(frame(1, 42, nil)), &out)
	_, err := c.Recv()
	if err == nil {
		t.Fatal("want an error")
	}
	if err := c.SendError(err); err != nil {
		t.Fatal(err)
	}
	_, m, err := Decode(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	e, ok := m.(Error)
	if !ok || e.Code != CodeUnknownKind || !strings.Contains(e.Message, "42") {
		t.Fatalf("error frame = %#v", m)
	}
}

func TestEncodeRefusesOversize(t *testing.T) {
	_, err := Encode(nil, Version, Error{Message: strings.Repeat("x", MaxFrameSize)})
	var fe *FrameError
	if !errors.As(err, &fe) || fe.Code != CodeTooLarge {
		t.Fatalf("err = %v, want too_large", err)
	}
}

func TestNegotiate(t *testing.T) {
	if v, ok := Negotiate([]uint16{7, 1}); !ok || v != 1 {
		t.Fatalf("Negotiate = %d %v", v, ok)
	}
	if _, ok := Negotiate([]uint16{7}); ok {
		t.Fatal("negotiated a version this build does not speak")
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	prevCeil := time.Duration(0)
	for i := range 12 {
		d := b.Next()
		ceil := min(100*time.Millisecond<<i, 2*time.Second)
		if d < ceil/2 || d > ceil {
			t.Fatalf("attempt %d: delay %s outside [%s, %s]", i, d, ceil/2, ceil)
		}
		if ceil < prevCeil {
			t.Fatal("ceiling shrank")
		}
		prevCeil = ceil
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Fatalf("after Reset delay %s > Min", d)
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range []Message{Hello{Versions: []uint16{1}, Site: "west"}, Heartbeat{Seq: 1}, sampleInventory(2),
		Command{ID: "c", Op: CmdBoot, Boot: &BootCommand{Names: []string{"a"}}}, Result{CommandID: "c", OK: true},
		sampleCopy(), sampleProgress(), Command{ID: "d", Op: CmdImageDelete, ImageDelete: &ImageDeleteCommand{ImageID: "x"}}} {
		b, err := Encode(nil, Version, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xCA, 0x70, 1, 3, 0, 0, 0, 1, 0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, m, err := Decode(b)
		if err != nil {
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("decode error is not a FrameError: %v", err)
			}
			return
		}
		// Whatever decodes must encode and decode to the same message.
		b2, err := Encode(nil, Version, m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		_, m2, err := Decode(b2)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("unstable round trip: %#v vs %#v", m, m2)
		}
	})
}

func BenchmarkEncodeHeartbeat(b *testing.B) {
	m := Heartbeat{Seq: 1, SentAt: time.Now()}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = Encode(buf[:0], Version, m)
	}
}

func BenchmarkDecodeHeartbeat(b *testing.B) {
	fr, _ := Encode(nil, Version, Heartbeat{Seq: 1, SentAt: time.Now()})
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Decode(fr); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeInventory1000(b *testing.B) {
	m := sampleInventory(1000)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = Encode(buf[:0], Version, m)
	}
	b.ReportMetric(float64(len(buf)), "bytes/frame")
}

func BenchmarkDecodeInventory1000(b *testing.B) {
	fr, _ := Encode(nil, Version, sampleInventory(1000))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Decode(fr); err != nil {
			b.Fatal(err)
		}
	}
}
