package gossip

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// WireVersion is the first byte of every gossip message, node meta and
// push/pull state this build writes. A receiver refuses other versions: a
// change that old members cannot read gets a new version; fields added to
// the CBOR bodies are ignored by old members and are not such a change.
const WireVersion = 1

// Limits on what a member sends or accepts.
const (
	// MaxMessageSize bounds one encoded gossip message. Messages ride in
	// memberlist's UDP packets (1400 bytes, less encryption, label and
	// framing overhead), so a larger one could never be sent.
	MaxMessageSize = 1024
	// MaxStateSize bounds the push/pull state (sent over TCP): room for
	// MaxOrders signed orders.
	MaxStateSize = 1 << 20
	// MaxProxies bounds the number of entries in a squid list.
	MaxProxies = 16
	// MaxProxyLen bounds one squid list entry.
	MaxProxyLen = 256
	// MaxNameLen bounds server names and ids.
	MaxNameLen = 255
	// MaxReasonLen bounds a retirement reason.
	MaxReasonLen = 200
	// MaxGroupLen bounds a VM's group name in its meta.
	MaxGroupLen = 128
	// MaxOrders bounds the retirement orders a member keeps.
	MaxOrders = 4096
)

// metaMaxSize is memberlist's limit on node meta (memberlist.MetaMaxSize).
const metaMaxSize = 512

// Role says what kind of member a node is.
type Role string

// Roles.
const (
	RoleAgent Role = "agent"
	RoleVM    Role = "vm"
)

// State is what a member says about itself in its meta.
type State string

// Member states.
const (
	// StateReady: taking jobs.
	StateReady State = "ready"
	// StateDraining: retiring; running jobs finish, no new ones start.
	StateDraining State = "draining"
	// StateLeaving: about to leave the pool on purpose.
	StateLeaving State = "leaving"
)

// Meta is what each member advertises about itself to the whole pool.
type Meta struct {
	Role Role
	// ServerID is the VM's cloud server id (empty for the agent).
	ServerID string
	// Group is the VM's owner group (empty for the agent).
	Group string
	State State
}

// SquidList is the site's current squid proxies, best first. A list with a
// higher Version replaces one with a lower Version everywhere.
type SquidList struct {
	Version uint64
	// Proxies are opaque entries (such as http://10.0.0.7:3128 or DIRECT)
	// limited to a safe character set so they can be written into a
	// configuration file as they are.
	Proxies []string
}

// RetireOrder tells the VM named Server to stop taking jobs and finish by
// Deadline. For one server, an order with a higher Version replaces one with
// a lower Version.
type RetireOrder struct {
	Server   string
	Deadline time.Time // carried with millisecond precision
	Reason   string
	Version  uint64
}

type kind byte

const (
	kindSquids  kind = 1
	kindRetire  kind = 2
	kindLeaving kind = 3
)

func (k kind) String() string {
	switch k {
	case kindSquids:
		return "squids"
	case kindRetire:
		return "retire"
	case kindLeaving:
		return "leaving"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// Wire forms. Integer keys keep messages small.
type wireSquids struct {
	Version uint64   `cbor:"1,keyasint"`
	Proxies []string `cbor:"2,keyasint"`
}

type wireOrder struct {
	Server   string `cbor:"1,keyasint"`
	Deadline int64  `cbor:"2,keyasint"` // Unix milliseconds
	Reason   string `cbor:"3,keyasint,omitempty"`
	Version  uint64 `cbor:"4,keyasint"`
}

type wireLeaving struct {
	Server string `cbor:"1,keyasint"`
}

type wireMeta struct {
	Role     string `cbor:"1,keyasint"`
	ServerID string `cbor:"2,keyasint,omitempty"`
	Group    string `cbor:"3,keyasint,omitempty"`
	State    string `cbor:"4,keyasint"`
}

// wireState carries the signed messages themselves, so that a member can
// check the agent's signature on what another member hands it.
type wireState struct {
	Squids []byte   `cbor:"1,keyasint,omitempty"`
	Orders [][]byte `cbor:"2,keyasint,omitempty"`
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  8,
		MaxArrayElements: MaxOrders,
		MaxMapPairs:      16,
		TagsMd:           cbor.TagsForbidden,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// message is one decoded gossip message.
type message struct {
	kind    kind
	squids  SquidList
	order   RetireOrder
	leaving string // server name
}

// sigSize is the size of the agent's signature that ends squid list and
// retirement messages.
const sigSize = ed25519.SignatureSize

// signed reports whether messages of kind k must carry the agent's
// signature. Only the agent originates squid lists and orders; VMs relay
// them, so a VM cannot forge one. "Leaving" notices come from VMs and are
// not signed.
func (k kind) signed() bool { return k == kindSquids || k == kindRetire }

func encodeSquids(l SquidList, signer ed25519.PrivateKey) ([]byte, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	return encodeMessage(kindSquids, wireSquids(l), signer)
}

func encodeOrder(o RetireOrder, signer ed25519.PrivateKey) ([]byte, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	return encodeMessage(kindRetire, toWireOrder(o), signer)
}

func encodeLeaving(server string) ([]byte, error) {
	if err := checkName("server", server, MaxNameLen); err != nil {
		return nil, err
	}
	return encodeMessage(kindLeaving, wireLeaving{Server: server}, nil)
}

// encodeMessage frames body: version, kind, CBOR body and, for signed
// kinds, the signature over all that precedes it.
func encodeMessage(k kind, body any, signer ed25519.PrivateKey) ([]byte, error) {
	b, err := encMode.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s message: %w", k, err)
	}
	out := append([]byte{WireVersion, byte(k)}, b...)
	if k.signed() {
		if len(signer) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("encode %s message: no signing key", k)
		}
		out = append(out, ed25519.Sign(signer, out)...)
	}
	if len(out) > MaxMessageSize {
		return nil, fmt.Errorf("%s message is %d bytes, limit %d", k, len(out), MaxMessageSize)
	}
	return out, nil
}

// decodeMessage decodes and checks one gossip message from another member;
// squid lists and orders must be signed by agentKey.
func decodeMessage(b []byte, agentKey ed25519.PublicKey) (message, error) {
	var m message
	if len(b) > MaxMessageSize {
		return m, fmt.Errorf("gossip message is %d bytes, limit %d", len(b), MaxMessageSize)
	}
	if len(b) < 2 {
		return m, fmt.Errorf("gossip message is %d bytes, too short", len(b))
	}
	if b[0] != WireVersion {
		return m, fmt.Errorf("gossip message version %d, want %d", b[0], WireVersion)
	}
	m.kind = kind(b[1])
	body := b[2:]
	if m.kind.signed() {
		if len(b) < 2+sigSize {
			return m, fmt.Errorf("%s message is unsigned", m.kind)
		}
		if len(agentKey) != ed25519.PublicKeySize {
			return m, fmt.Errorf("%s message: no agent key to check it with", m.kind)
		}
		signedPart := b[:len(b)-sigSize]
		if !ed25519.Verify(agentKey, signedPart, b[len(b)-sigSize:]) {
			return m, fmt.Errorf("%s message: bad signature (not from this site's agent)", m.kind)
		}
		body = signedPart[2:]
	}
	switch m.kind {
	case kindSquids:
		var w wireSquids
		if err := decMode.Unmarshal(body, &w); err != nil {
			return m, fmt.Errorf("decode squids message: %w", err)
		}
		m.squids = SquidList(w)
		if err := m.squids.validate(); err != nil {
			return m, fmt.Errorf("squids message: %w", err)
		}
	case kindRetire:
		var w wireOrder
		if err := decMode.Unmarshal(body, &w); err != nil {
			return m, fmt.Errorf("decode retire message: %w", err)
		}
		o, err := fromWireOrder(w)
		if err != nil {
			return m, fmt.Errorf("retire message: %w", err)
		}
		m.order = o
	case kindLeaving:
		var w wireLeaving
		if err := decMode.Unmarshal(body, &w); err != nil {
			return m, fmt.Errorf("decode leaving message: %w", err)
		}
		if err := checkName("server", w.Server, MaxNameLen); err != nil {
			return m, fmt.Errorf("leaving message: %w", err)
		}
		m.leaving = w.Server
	default:
		return m, fmt.Errorf("unknown gossip message kind %d", b[1])
	}
	return m, nil
}

func toWireOrder(o RetireOrder) wireOrder {
	return wireOrder{Server: o.Server, Deadline: o.Deadline.UnixMilli(), Reason: o.Reason, Version: o.Version}
}

// Deadlines must lie between 2000 and 2200: anything else is garbage.
var (
	minDeadline = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	maxDeadline = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
)

func fromWireOrder(w wireOrder) (RetireOrder, error) {
	if w.Deadline < minDeadline || w.Deadline > maxDeadline {
		return RetireOrder{}, fmt.Errorf("deadline %d ms is out of range", w.Deadline)
	}
	o := RetireOrder{Server: w.Server, Deadline: time.UnixMilli(w.Deadline), Reason: w.Reason, Version: w.Version}
	return o, o.validate()
}

func (l SquidList) validate() error {
	if l.Version == 0 {
		return errors.New("squid list version is 0")
	}
	if len(l.Proxies) > MaxProxies {
		return fmt.Errorf("squid list has %d entries, limit %d", len(l.Proxies), MaxProxies)
	}
	for i, p := range l.Proxies {
		if p == "" || len(p) > MaxProxyLen {
			return fmt.Errorf("squid list entry %d is %d bytes, want 1..%d", i, len(p), MaxProxyLen)
		}
		if j := strings.IndexFunc(p, func(r rune) bool { return !proxyRune(r) }); j >= 0 {
			return fmt.Errorf("squid list entry %d (%q) has a forbidden character at %d", i, p, j)
		}
	}
	return nil
}

// proxyRune reports whether r may appear in a squid list entry: URL
// characters, but none of CVMFS's list separators (; |), spaces, quotes or
// control characters.
func proxyRune(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune("-._~:/[]@%", r)
}

func (o RetireOrder) validate() error {
	if err := checkName("server", o.Server, MaxNameLen); err != nil {
		return err
	}
	if err := checkText("reason", o.Reason, MaxReasonLen); err != nil {
		return err
	}
	if o.Version == 0 {
		return errors.New("retire order version is 0")
	}
	if ms := o.Deadline.UnixMilli(); ms < minDeadline || ms > maxDeadline {
		return fmt.Errorf("retire deadline %s is out of range", o.Deadline.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkName checks a required identifier.
func checkName(what, s string, limit int) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	return checkText(what, s, limit)
}

// checkText checks free text that ends up in logs: bounded, valid UTF-8, no
// control characters.
func checkText(what, s string, limit int) error {
	if len(s) > limit {
		return fmt.Errorf("%s is %d bytes, limit %d", what, len(s), limit)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s %q has a control character", what, s)
		}
	}
	return nil
}

func (m Meta) validate() error {
	switch m.Role {
	case RoleAgent, RoleVM:
	default:
		return fmt.Errorf("meta role %q is neither %q nor %q", m.Role, RoleAgent, RoleVM)
	}
	switch m.State {
	case StateReady, StateDraining, StateLeaving:
	default:
		return fmt.Errorf("meta state %q is not one of ready, draining, leaving", m.State)
	}
	if err := checkText("meta server id", m.ServerID, MaxNameLen); err != nil {
		return err
	}
	return checkText("meta group", m.Group, MaxGroupLen)
}

func encodeMeta(m Meta) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	b, err := encMode.Marshal(wireMeta{Role: string(m.Role), ServerID: m.ServerID, Group: m.Group, State: string(m.State)})
	if err != nil {
		return nil, fmt.Errorf("encode meta: %w", err)
	}
	out := append([]byte{WireVersion}, b...)
	if len(out) > metaMaxSize {
		return nil, fmt.Errorf("meta is %d bytes, limit %d", len(out), metaMaxSize)
	}
	return out, nil
}

// decodeMeta decodes and checks another member's meta.
func decodeMeta(b []byte) (Meta, error) {
	if len(b) > metaMaxSize {
		return Meta{}, fmt.Errorf("meta is %d bytes, limit %d", len(b), metaMaxSize)
	}
	if len(b) < 1 {
		return Meta{}, errors.New("meta is empty")
	}
	if b[0] != WireVersion {
		return Meta{}, fmt.Errorf("meta version %d, want %d", b[0], WireVersion)
	}
	var w wireMeta
	if err := decMode.Unmarshal(b[1:], &w); err != nil {
		return Meta{}, fmt.Errorf("decode meta: %w", err)
	}
	m := Meta{Role: Role(w.Role), ServerID: w.ServerID, Group: w.Group, State: State(w.State)}
	return m, m.validate()
}

// encodeState writes a member's signed squid list and retirement order
// messages for a push/pull exchange.
func encodeState(squids []byte, orders [][]byte) ([]byte, error) {
	b, err := encMode.Marshal(wireState{Squids: squids, Orders: orders})
	if err != nil {
		return nil, fmt.Errorf("encode gossip state: %w", err)
	}
	out := append([]byte{WireVersion}, b...)
	if len(out) > MaxStateSize {
		return nil, fmt.Errorf("gossip state is %d bytes, limit %d", len(out), MaxStateSize)
	}
	return out, nil
}

// state is a decoded push/pull state: each entry with its signed message.
type state struct {
	squids    SquidList
	squidsMsg []byte
	orders    []RetireOrder
	orderMsgs [][]byte
}

// decodeState decodes another member's push/pull state, checking every
// message as if it had come alone. An entry that fails makes the whole
// state invalid: a member that sends garbage is not half-trusted.
func decodeState(b []byte, agentKey ed25519.PublicKey) (state, error) {
	var st state
	if len(b) > MaxStateSize {
		return st, fmt.Errorf("gossip state is %d bytes, limit %d", len(b), MaxStateSize)
	}
	if len(b) < 1 {
		return st, errors.New("gossip state is empty")
	}
	if b[0] != WireVersion {
		return st, fmt.Errorf("gossip state version %d, want %d", b[0], WireVersion)
	}
	var w wireState
	if err := decMode.Unmarshal(b[1:], &w); err != nil {
		return st, fmt.Errorf("decode gossip state: %w", err)
	}
	if w.Squids != nil {
		m, err := decodeMessage(w.Squids, agentKey)
		if err != nil {
			return state{}, fmt.Errorf("gossip state squid list: %w", err)
		}
		if m.kind != kindSquids {
			return state{}, fmt.Errorf("gossip state squid list is a %s message", m.kind)
		}
		st.squids, st.squidsMsg = m.squids, w.Squids
	}
	for i, raw := range w.Orders {
		m, err := decodeMessage(raw, agentKey)
		if err != nil {
			return state{}, fmt.Errorf("gossip state order %d: %w", i, err)
		}
		if m.kind != kindRetire {
			return state{}, fmt.Errorf("gossip state order %d is a %s message", i, m.kind)
		}
		st.orders = append(st.orders, m.order)
		st.orderMsgs = append(st.orderMsgs, raw)
	}
	return st, nil
}
