// Package protocol is Canopy's wire between the hub and its site agents:
// message types, framing, version negotiation, limits, and the QUIC +
// mutual-TLS session helpers both sides share. Nothing here knows about clouds.
//
// # Framing
//
// Every message travels in one frame:
//
//	magic   2 bytes  0xCA 0x70
//	version 1 byte   protocol version the frame is written in
//	kind    1 byte   message kind (Kind)
//	length  4 bytes  big-endian length of the body, at most MaxFrameSize
//	body    length bytes of CBOR (RFC 8949)
//
// # Why CBOR
//
// The body is CBOR, encoded by fxamacker/cbor. It is a binary format with an
// IETF standard, so frames stay small and fast to code (see the benchmarks in
// frame_test.go) without a code generator or an .proto toolchain in the
// build. Messages are plain Go structs with named fields, so adding a field is
// backwards compatible (unknown fields are ignored, missing ones are zero).
// The decoder was designed for untrusted input: it is configured here with
// hard limits on nesting, array and map sizes, rejects duplicate map keys and
// indefinite lengths, and never panics on garbage (fuzzed by FuzzDecode).
// JSON was the other candidate: readable, but several times slower and
// larger for inventories of thousands of VMs, and it cannot tell an integer
// from a float without extra care.
package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/fxamacker/cbor/v2"
)

// Version is the newest protocol version this build speaks.
const Version uint16 = 1

// SupportedVersions lists every protocol version this build speaks, newest first.
var SupportedVersions = []uint16{Version}

// ALPN is the TLS application protocol name of Canopy's hub-agent sessions.
const ALPN = "canopy/1"

// MaxFrameSize is the largest frame body either side accepts. An inventory
// of 10,000 VMs is about 2 MiB of CBOR; anything bigger is refused.
const MaxFrameSize = 8 << 20

// HeaderSize is the size of a frame header in bytes.
const HeaderSize = 8

var magic = [2]byte{0xCA, 0x70}

// FrameError is returned for input that breaks the protocol. Code says what
// kind of breakage it is, and is what the receiver puts in its Error frame.
type FrameError struct {
	Code ErrorCode
	Msg  string
}

func (e *FrameError) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Msg) }

func frameErr(code ErrorCode, format string, args ...any) error {
	return &FrameError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encOpts := cbor.CoreDetEncOptions()
	encOpts.Time = cbor.TimeRFC3339Nano
	encMode, err = encOpts.EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  16,
		MaxArrayElements: 200_000,
		MaxMapPairs:      10_000,
		TagsMd:           cbor.TagsAllowed,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Encode appends the frame for m, written in version v, to dst.
func Encode(dst []byte, v uint16, m Message) ([]byte, error) {
	body, err := encMode.Marshal(m)
	if err != nil {
		return dst, fmt.Errorf("encode %s: %w", m.Kind(), err)
	}
	if len(body) > MaxFrameSize {
		return dst, frameErr(CodeTooLarge, "%s body is %d bytes, limit %d", m.Kind(), len(body), MaxFrameSize)
	}
	var h [HeaderSize]byte
	h[0], h[1] = magic[0], magic[1]
	h[2] = byte(v)
	h[3] = byte(m.Kind())
	binary.BigEndian.PutUint32(h[4:], uint32(len(body)))
	dst = append(dst, h[:]...)
	return append(dst, body...), nil
}

// Header is a decoded frame header.
type Header struct {
	Version uint16
	Kind    Kind
	Length  int
}

// ParseHeader checks and decodes a frame header.
func ParseHeader(h []byte) (Header, error) {
	if len(h) < HeaderSize {
		return Header{}, frameErr(CodeMalformed, "header is %d bytes, want %d", len(h), HeaderSize)
	}
	if h[0] != magic[0] || h[1] != magic[1] {
		return Header{}, frameErr(CodeMalformed, "bad magic %#02x%02x", h[0], h[1])
	}
	n := binary.BigEndian.Uint32(h[4:])
	if n > MaxFrameSize {
		return Header{}, frameErr(CodeTooLarge, "frame body of %d bytes exceeds limit %d", n, MaxFrameSize)
	}
	return Header{Version: uint16(h[2]), Kind: Kind(h[3]), Length: int(n)}, nil
}

// DecodeBody decodes and validates the body of a frame of the given kind.
func DecodeBody(k Kind, body []byte) (Message, error) {
	var m Message
	var err error
	switch k {
	case KindHello:
		m, err = decodeAs[Hello](body)
	case KindWelcome:
		m, err = decodeAs[Welcome](body)
	case KindInventory:
		m, err = decodeAs[Inventory](body)
	case KindCommand:
		m, err = decodeAs[Command](body)
	case KindResult:
		m, err = decodeAs[Result](body)
	case KindHeartbeat:
		m, err = decodeAs[Heartbeat](body)
	case KindError:
		m, err = decodeAs[Error](body)
	case KindSquids:
		m, err = decodeAs[SquidList](body)
	case KindInventoryDelta:
		m, err = decodeAs[InventoryDelta](body)
	case KindResync:
		m, err = decodeAs[Resync](body)
	case KindImageProgress:
		m, err = decodeAs[ImageProgress](body)
	default:
		return nil, frameErr(CodeUnknownKind, "unknown message kind %d", uint8(k))
	}
	if err != nil {
		return nil, frameErr(CodeMalformed, "%s body: %v", k, err)
	}
	if err := m.Validate(); err != nil {
		return nil, frameErr(CodeMalformed, "%s: %v", k, err)
	}
	return m, nil
}

func decodeAs[T Message](body []byte) (Message, error) {
	var v T
	if err := decMode.Unmarshal(body, &v); err != nil {
		return nil, err
	}
	if n, ok := any(&v).(normalizer); ok {
		if err := n.normalizeTimes(); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// Decode decodes one whole frame held in b and returns its header and message.
func Decode(b []byte) (Header, Message, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return h, nil, err
	}
	if len(b)-HeaderSize != h.Length {
		return h, nil, frameErr(CodeMalformed, "frame says %d body bytes, holds %d", h.Length, len(b)-HeaderSize)
	}
	m, err := DecodeBody(h.Kind, b[HeaderSize:])
	return h, m, err
}

// Conn reads and writes frames on one byte stream (a QUIC stream in
// production). Send is safe for concurrent use; Recv must be called from one
// goroutine at a time.
type Conn struct {
	r       *bufio.Reader
	wmu     sync.Mutex
	w       io.Writer
	buf     []byte
	version uint16
	rbuf    []byte
}

// NewConn returns a Conn on rw speaking version v (use Version until the
// handshake has negotiated one).
func NewConn(r io.Reader, w io.Writer) *Conn {
	return &Conn{r: bufio.NewReaderSize(r, 64<<10), w: w, version: Version}
}

// SetVersion sets the version frames are written in and must be read in.
func (c *Conn) SetVersion(v uint16) { c.version = v }

// Send writes m as one frame.
func (c *Conn) Send(m Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var err error
	c.buf, err = Encode(c.buf[:0], c.version, m)
	if err != nil {
		return err
	}
	if _, err := c.w.Write(c.buf); err != nil {
		return fmt.Errorf("send %s: %w", m.Kind(), err)
	}
	return nil
}

// Recv reads the next frame. Protocol violations are returned as *FrameError;
// the caller should answer them with SendError and close the stream.
// Frames written in another version than the session's are refused.
func (c *Conn) Recv() (Message, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, frameErr(CodeMalformed, "stream ended inside a frame header")
		}
		return nil, err
	}
	hdr, err := ParseHeader(h[:])
	if err != nil {
		return nil, err
	}
	if hdr.Version != c.version {
		return nil, frameErr(CodeBadVersion, "frame in version %d, session speaks %d", hdr.Version, c.version)
	}
	if cap(c.rbuf) < hdr.Length {
		c.rbuf = make([]byte, hdr.Length)
	}
	body := c.rbuf[:hdr.Length]
	if _, err := io.ReadFull(c.r, body); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, frameErr(CodeMalformed, "stream ended inside a %s frame (%d body bytes expected)", hdr.Kind, hdr.Length)
		}
		return nil, err
	}
	return DecodeBody(hdr.Kind, body)
}

// SendError tells the peer why its input is refused. Errors that are not
// protocol violations are reported as CodeUnexpected.
func (c *Conn) SendError(err error) error {
	var fe *FrameError
	if errors.As(err, &fe) {
		return c.Send(Error{Code: fe.Code, Message: truncate(fe.Msg, maxTextLen)})
	}
	return c.Send(Error{Code: CodeUnexpected, Message: truncate(err.Error(), maxTextLen)})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
