package gossip

import (
	"bytes"
	"crypto/ed25519"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

var testDeadline = time.UnixMilli(1_800_000_000_000)

func TestMessageRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		encode func() ([]byte, error)
		want   message
	}{
		{"squids", func() ([]byte, error) {
			return encodeSquids(SquidList{Version: 7, Proxies: []string{"http://10.0.0.7:3128", "http://[fd00::1]:3128", "DIRECT"}}, testSigner)
		}, message{kind: kindSquids, squids: SquidList{Version: 7, Proxies: []string{"http://10.0.0.7:3128", "http://[fd00::1]:3128", "DIRECT"}}}},
		{"empty squid list", func() ([]byte, error) { return encodeSquids(SquidList{Version: 1}, testSigner) },
			message{kind: kindSquids, squids: SquidList{Version: 1}}},
		{"retire", func() ([]byte, error) {
			return encodeOrder(RetireOrder{Server: "canopy-atlas-0001", Deadline: testDeadline, Reason: "demand fell", Version: 3}, testSigner)
		}, message{kind: kindRetire, order: RetireOrder{Server: "canopy-atlas-0001", Deadline: testDeadline, Reason: "demand fell", Version: 3}}},
		{"leaving", func() ([]byte, error) { return encodeLeaving("canopy-atlas-0001") },
			message{kind: kindLeaving, leaving: "canopy-atlas-0001"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeMessage(b, testAgentKey())
			if err != nil {
				t.Fatal(err)
			}
			if !got.order.Deadline.Equal(tt.want.order.Deadline) {
				t.Fatalf("deadline %s, want %s", got.order.Deadline, tt.want.order.Deadline)
			}
			got.order.Deadline, tt.want.order.Deadline = time.Time{}, time.Time{}
			if len(got.squids.Proxies) == 0 {
				got.squids.Proxies = nil
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("decoded %+v, want %+v", got, tt.want)
			}
		})
	}
}

func cborOf(t *testing.T, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// frame frames body as a message of kind k, signed with testSigner when k
// needs a signature.
func frame(k kind, body []byte) []byte {
	out := append([]byte{WireVersion, byte(k)}, body...)
	if k.signed() {
		out = append(out, ed25519.Sign(testSigner, out)...)
	}
	return out
}

var otherSigner = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))

func TestDecodeMessageRejects(t *testing.T) {
	good := wireOrder{Server: "vm", Deadline: testDeadline.UnixMilli(), Version: 1}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"version only", []byte{WireVersion}, "too short"},
		{"future version", []byte{2, byte(kindSquids), 0xa0}, "version 2"},
		{"unsigned squids", append([]byte{WireVersion, byte(kindSquids)}, cborOf(t, wireSquids{Version: 1})...), "unsigned"},
		{"squids signed by a VM", signedBy(otherSigner, kindSquids, cborOf(t, wireSquids{Version: 1 << 62})), "bad signature"},
		{"order signed by a VM", signedBy(otherSigner, kindRetire, cborOf(t, good)), "bad signature"},
		{"tampered order", tamper(frame(kindRetire, cborOf(t, good))), "bad signature"},
		{"unknown kind", []byte{WireVersion, 99, 0xa0}, "unknown gossip message kind 99"},
		{"oversized", frame(kindSquids, make([]byte, MaxMessageSize)), "limit"},
		{"not cbor", frame(kindSquids, []byte{0xff, 0x00}), "decode squids"},
		{"trailing bytes", frame(kindLeaving, append(cborOf(t, wireLeaving{Server: "vm"}), 0x00)), "decode leaving"},
		{"wrong type", frame(kindSquids, cborOf(t, map[int]string{1: "x"})), "decode squids"},
		{"duplicate key", frame(kindLeaving, []byte{0xa2, 0x01, 0x61, 'a', 0x01, 0x61, 'b'}), "decode leaving"},
		{"indefinite length", frame(kindLeaving, []byte{0xbf, 0x01, 0x61, 'a', 0xff}), "decode leaving"},
		{"tag", frame(kindLeaving, []byte{0xc1, 0xa1, 0x01, 0x61, 'a'}), "decode leaving"},
		{"squids version 0", frame(kindSquids, cborOf(t, wireSquids{Proxies: []string{"a"}})), "version is 0"},
		{"too many proxies", frame(kindSquids, cborOf(t, wireSquids{Version: 1, Proxies: make17()})), "17 entries"},
		{"empty proxy", frame(kindSquids, cborOf(t, wireSquids{Version: 1, Proxies: []string{""}})), "entry 0"},
		{"newline in proxy", frame(kindSquids, cborOf(t, wireSquids{Version: 1, Proxies: []string{"http://a:1\nCVMFS_X=1"}})), "forbidden character"},
		{"separator in proxy", frame(kindSquids, cborOf(t, wireSquids{Version: 1, Proxies: []string{"http://a:1;http://b:2"}})), "forbidden character"},
		{"space in proxy", frame(kindSquids, cborOf(t, wireSquids{Version: 1, Proxies: []string{"http://a :1"}})), "forbidden character"},
		{"quote in proxy", frame(kindSquids, cborOf(t, wireSquids{Version: 1, Proxies: []string{`http://a"`}})), "forbidden character"},
		{"order without server", frame(kindRetire, cborOf(t, wireOrder{Deadline: good.Deadline, Version: 1})), "server is empty"},
		{"order version 0", frame(kindRetire, cborOf(t, wireOrder{Server: "vm", Deadline: good.Deadline})), "version is 0"},
		{"order deadline 0", frame(kindRetire, cborOf(t, wireOrder{Server: "vm", Version: 1})), "out of range"},
		{"order deadline far", frame(kindRetire, cborOf(t, wireOrder{Server: "vm", Deadline: 1 << 62, Version: 1})), "out of range"},
		{"order reason control", frame(kindRetire, cborOf(t, wireOrder{Server: "vm", Deadline: good.Deadline, Version: 1, Reason: "a\x1b[31m"})), "control character"},
		{"order reason long", frame(kindRetire, cborOf(t, wireOrder{Server: "vm", Deadline: good.Deadline, Version: 1, Reason: strings.Repeat("r", MaxReasonLen+1)})), "limit"},
		{"order server bad utf8", frame(kindRetire, cborOf(t, wireOrder{Server: "vm", Deadline: good.Deadline, Version: 1, Reason: "\xff"})), "decode retire"},
		{"leaving without server", frame(kindLeaving, cborOf(t, wireLeaving{})), "server is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeMessage(tt.in, testAgentKey())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func signedBy(k ed25519.PrivateKey, kd kind, body []byte) []byte {
	out := append([]byte{WireVersion, byte(kd)}, body...)
	return append(out, ed25519.Sign(k, out)...)
}

func tamper(b []byte) []byte {
	out := bytes.Clone(b)
	out[4] ^= 1
	return out
}

func make17() []string {
	out := make([]string, MaxProxies+1)
	for i := range out {
		out[i] = "http://a:1"
	}
	return out
}

func TestEncodeLimits(t *testing.T) {
	long := make([]string, MaxProxies)
	for i := range long {
		long[i] = "http://" + strings.Repeat("s", MaxProxyLen-7)
	}
	tests := []struct {
		name string
		err  func() error
		want string
	}{
		{"squid list over message size", func() error {
			_, err := encodeSquids(SquidList{Version: 1, Proxies: long}, testSigner)
			return err
		}, "limit 1024"},
		{"bad proxy", func() error {
			_, err := encodeSquids(SquidList{Version: 1, Proxies: []string{"a b"}}, testSigner)
			return err
		}, "forbidden"},
		{"no signer", func() error { _, err := encodeSquids(SquidList{Version: 1}, nil); return err }, "no signing key"},
		{"server too long", func() error {
			_, err := encodeOrder(RetireOrder{Server: strings.Repeat("v", MaxNameLen+1), Deadline: testDeadline, Version: 1}, testSigner)
			return err
		}, "limit"},
		{"meta bad role", func() error { _, err := encodeMeta(Meta{Role: "boss", State: StateReady}); return err }, "role"},
		{"meta bad state", func() error { _, err := encodeMeta(Meta{Role: RoleVM, State: "gone"}); return err }, "state"},
		{"meta group too long", func() error {
			_, err := encodeMeta(Meta{Role: RoleVM, State: StateReady, Group: strings.Repeat("g", MaxGroupLen+1)})
			return err
		}, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.err(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestMetaFitsMemberlistLimit(t *testing.T) {
	// The largest meta a VM can have still fits memberlist's 512 bytes.
	m := Meta{Role: RoleVM, ServerID: strings.Repeat("i", MaxNameLen), Group: strings.Repeat("g", MaxGroupLen), State: StateDraining}
	b, err := encodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > metaMaxSize {
		t.Fatalf("largest meta is %d bytes", len(b))
	}
	got, err := decodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("decoded %+v, %v", got, err)
	}
}

func TestDecodeMetaRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"future version", []byte{9, 0xa0}, "version 9"},
		{"oversized", append([]byte{WireVersion}, make([]byte, metaMaxSize)...), "limit"},
		{"no role", append([]byte{WireVersion}, cborOf(t, wireMeta{State: "ready"})...), "role"},
		{"bad state", append([]byte{WireVersion}, cborOf(t, wireMeta{Role: "vm", State: "zombie"})...), "state"},
		{"garbage", []byte{WireVersion, 0x5f}, "decode meta"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeMeta(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestStateRoundTripAndRejects(t *testing.T) {
	squids, err := encodeSquids(SquidList{Version: 5, Proxies: []string{"http://s:3128"}}, testSigner)
	if err != nil {
		t.Fatal(err)
	}
	o1, err := encodeOrder(RetireOrder{Server: "a", Deadline: testDeadline, Version: 1}, testSigner)
	if err != nil {
		t.Fatal(err)
	}
	o2, err := encodeOrder(RetireOrder{Server: "b", Deadline: testDeadline, Reason: "r", Version: 2}, testSigner)
	if err != nil {
		t.Fatal(err)
	}
	b, err := encodeState(squids, [][]byte{o1, o2})
	if err != nil {
		t.Fatal(err)
	}
	st, err := decodeState(b, testAgentKey())
	if err != nil {
		t.Fatal(err)
	}
	if st.squids.Version != 5 || len(st.squids.Proxies) != 1 || !bytes.Equal(st.squidsMsg, squids) || len(st.orders) != 2 ||
		st.orders[1].Reason != "r" || !st.orders[0].Deadline.Equal(testDeadline) || !bytes.Equal(st.orderMsgs[1], o2) {
		t.Fatalf("decoded %+v", st)
	}
	empty, err := encodeState(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := decodeState(empty, testAgentKey()); err != nil || st.squidsMsg != nil || len(st.orders) != 0 {
		t.Fatalf("empty state decoded %+v %v", st, err)
	}

	leaving, err := encodeLeaving("vm")
	if err != nil {
		t.Fatal(err)
	}
	forged := signedBy(otherSigner, kindRetire, cborOf(t, wireOrder{Server: "a", Deadline: testDeadline.UnixMilli(), Version: 9}))
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"future version", []byte{3, 0xa0}, "version 3"},
		{"oversized", make([]byte, MaxStateSize+1), "limit"},
		{"garbage", []byte{WireVersion, 0xff}, "decode gossip state"},
		{"bad squids", append([]byte{WireVersion}, cborOf(t, wireState{Squids: frame(kindSquids, cborOf(t, wireSquids{Version: 1, Proxies: []string{"a\n"}}))})...), "forbidden"},
		{"order as squids", append([]byte{WireVersion}, cborOf(t, wireState{Squids: o1})...), "is a retire message"},
		{"leaving as order", append([]byte{WireVersion}, cborOf(t, wireState{Orders: [][]byte{leaving}})...), "is a leaving message"},
		{"forged order", append([]byte{WireVersion}, cborOf(t, wireState{Orders: [][]byte{o1, forged}})...), "order 1: retire message: bad signature"},
		{"too many orders", append([]byte{WireVersion}, cborOf(t, wireState{Orders: make([][]byte, MaxOrders+1)})...), "decode gossip state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeState(tt.in, testAgentKey())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// FuzzDecodeMessage: no input panics, and whatever decodes re-encodes to
// something that decodes to the same message. Each input is also tried
// with a valid signature appended, so that the body decoders are fuzzed
// too, not just the signature check.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range seedMessages(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkMessage(t, b)
		if len(b) >= 2 && len(b)+sigSize <= MaxMessageSize {
			checkMessage(t, append(bytes.Clone(b), ed25519.Sign(testSigner, b)...))
		}
	})
}

func checkMessage(t *testing.T, b []byte) {
	m, err := decodeMessage(b, testAgentKey())
	if err != nil {
		return
	}
	var again []byte
	switch m.kind {
	case kindSquids:
		again, err = encodeSquids(m.squids, testSigner)
	case kindRetire:
		again, err = encodeOrder(m.order, testSigner)
	case kindLeaving:
		again, err = encodeLeaving(m.leaving)
	}
	if err != nil {
		t.Fatalf("decoded %+v but cannot re-encode: %v", m, err)
	}
	m2, err := decodeMessage(again, testAgentKey())
	if err != nil {
		t.Fatalf("re-encoded message does not decode: %v", err)
	}
	if m.kind != m2.kind || m.leaving != m2.leaving || m.squids.Version != m2.squids.Version ||
		len(m.squids.Proxies) != len(m2.squids.Proxies) || m.order.Server != m2.order.Server || !m.order.Deadline.Equal(m2.order.Deadline) {
		t.Fatalf("round trip changed %+v into %+v", m, m2)
	}
}

func seedMessages(t testing.TB) [][]byte {
	var out [][]byte
	for _, enc := range []func() ([]byte, error){
		func() ([]byte, error) {
			return encodeSquids(SquidList{Version: 9, Proxies: []string{"http://10.0.0.7:3128", "DIRECT"}}, testSigner)
		},
		func() ([]byte, error) {
			return encodeOrder(RetireOrder{Server: "vm-1", Deadline: testDeadline, Reason: "demand", Version: 2}, testSigner)
		},
		func() ([]byte, error) { return encodeLeaving("vm-1") },
	} {
		b, err := enc()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzDecodeMeta: no input panics; whatever decodes re-encodes identically.
func FuzzDecodeMeta(f *testing.F) {
	b, err := encodeMeta(Meta{Role: RoleVM, ServerID: "0b5e", Group: "atlas", State: StateDraining})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		again, err := encodeMeta(m)
		if err != nil {
			t.Fatalf("decoded %+v but cannot re-encode: %v", m, err)
		}
		if m2, err := decodeMeta(again); err != nil || m2 != m {
			t.Fatalf("round trip changed %+v into %+v (%v)", m, m2, err)
		}
	})
}

// FuzzDecodeState: no input panics; whatever decodes re-encodes and decodes
// to the same entries.
func FuzzDecodeState(f *testing.F) {
	seeds := seedMessages(f)
	b, err := encodeState(seeds[0], [][]byte{seeds[1]})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeState(b, testAgentKey())
		if err != nil {
			return
		}
		again, err := encodeState(st.squidsMsg, st.orderMsgs)
		if err != nil {
			t.Fatalf("decoded state cannot re-encode: %v", err)
		}
		st2, err := decodeState(again, testAgentKey())
		if err != nil || st2.squids.Version != st.squids.Version || len(st2.orders) != len(st.orders) {
			t.Fatalf("round trip changed state (%v)", err)
		}
	})
}
