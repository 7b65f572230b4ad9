package htcondor

import (
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// This file reads the ads that condor_q, condor_status and condor_history
// print with -json (one JSON array of objects; nothing at all when no ad
// matched; condor_history prints "[]") or -jsonl (one object per line), one
// ad at a time, so that memory stays bounded by the largest ad however long
// the queue is.
//
// It is a small scanner of its own rather than encoding/json's Decoder: on
// a 300,000-job queue the Decoder (which scans every ad twice and then
// copies it) took several times longer than the rest of the work together
// (BenchmarkStreamDecoders). The scanner validates full JSON syntax (the
// fuzz target checks it against encoding/json) and hands out each
// attribute's name and raw value without copying or converting; values are
// turned into ClassAd expressions only when needed (see convert.go).

// valueKind is the JSON type of a raw value.
type valueKind uint8

const (
	kindString valueKind = iota + 1
	kindNumber
	kindTrue
	kindFalse
	kindNull
	kindArray
	kindObject
)

var kindNames = [...]string{"", "string", "number", "true", "false", "null", "array", "object"}

func (k valueKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "?"
}

// rawAttr is one attribute of an ad: its name (unescaped, case kept) and its
// value as JSON text (a string keeps its quotes and escapes).
type rawAttr struct {
	name []byte
	kind valueKind
	val  []byte
}

// DecodeError is output that is not a well-formed stream of JSON ads.
type DecodeError struct {
	// Offset is the byte offset in the output where the problem was seen.
	Offset int64
	// Ad counts the ads read before the bad one.
	Ad  int
	Msg string
	// Err is ErrTruncated for output that ends in the middle, else nil.
	Err error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("JSON ads: ad %d, byte %d: %s", e.Ad, e.Offset, e.Msg)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// ErrTruncated marks output that ends before its last ad or its closing
// bracket.
var ErrTruncated = errors.New("output ends early")

// maxDepth bounds the nesting of lists and nested ads inside one ad.
const maxDepth = 64

// maxAttrs bounds the attributes of one ad.
const maxAttrs = 1 << 16

// adStream reads ads from r. Use next until it returns io.EOF.
type adStream struct {
	r       io.Reader
	buf     []byte
	start   int // first byte of the ad being read
	pos     int // next byte to look at
	end     int // bytes of buf holding data
	eof     bool
	full    bool  // the ad being read does not fit in maxAd
	rerr    error // read error other than io.EOF
	base    int64 // stream offset of buf[0]
	maxAd   int
	ads     int
	state   streamState
	attrs   []rawAttr
	spans   []attrSpan
	names   []byte // unescaped names that had escapes
	scratch []byte
}

type streamState uint8

const (
	stateBegin     streamState = iota
	stateArray                 // inside [ ... ], before an ad or ]
	stateArrayNext             // inside [ ... ], after an ad: , or ]
	stateLines                 // a sequence of objects (-jsonl)
	stateDone
)

// attrSpan is an attribute's place while the ad is read: offsets relative
// to start, so that the buffer may move. nameEsc marks a name unescaped into
// names.
type attrSpan struct {
	nameOff, nameLen int
	nameEsc          bool
	kind             valueKind
	valOff, valLen   int
}

func newAdStream(r io.Reader, maxAd int) *adStream {
	if maxAd <= 0 {
		maxAd = DefaultMaxAdBytes
	}
	return &adStream{r: r, buf: make([]byte, 64<<10), maxAd: maxAd}
}

func (s *adStream) fail(msg string, args ...any) error {
	return &DecodeError{Offset: s.base + int64(s.pos), Ad: s.ads, Msg: fmt.Sprintf(msg, args...)}
}

func (s *adStream) truncated() error {
	if s.full {
		return s.fail("ad larger than %d bytes", s.maxAd)
	}
	if s.rerr != nil {
		return &DecodeError{Offset: s.base + int64(s.pos), Ad: s.ads, Msg: "read: " + s.rerr.Error(), Err: s.rerr}
	}
	return &DecodeError{Offset: s.base + int64(s.pos), Ad: s.ads, Msg: "output ends early", Err: ErrTruncated}
}

// fill reads more input, keeping buf[start:end]. It returns false at the end
// of input or on a read error (s.rerr).
func (s *adStream) fill() bool {
	if s.eof {
		return false
	}
	if s.start > 0 {
		n := copy(s.buf, s.buf[s.start:s.end])
		s.base += int64(s.start)
		s.pos -= s.start
		s.end = n
		s.start = 0
	}
	if s.end == len(s.buf) {
		if len(s.buf) >= s.maxAd+1024 {
			s.full = true
			return false
		}
		nb := make([]byte, min(2*len(s.buf), s.maxAd+1024))
		copy(nb, s.buf[:s.end])
		s.buf = nb
	}
	for tries := 0; tries < 100; tries++ {
		n, err := s.r.Read(s.buf[s.end:])
		s.end += n
		if err == io.EOF {
			s.eof = true
			return n > 0
		}
		if err != nil {
			s.eof, s.rerr = true, err
			return n > 0
		}
		if n > 0 {
			return true
		}
	}
	s.eof, s.rerr = true, io.ErrNoProgress
	return false
}

// peek returns the next byte without consuming it; ok is false at the end
// of input.
func (s *adStream) peek() (byte, bool) {
	if s.pos >= s.end && !s.more() {
		return 0, false
	}
	return s.buf[s.pos], true
}

// more makes at least one more byte available, or reports why not.
func (s *adStream) more() bool {
	for s.pos >= s.end {
		if !s.fill() {
			return false
		}
	}
	return true
}

// tooLarge reports whether the ad being read has outgrown maxAd.
func (s *adStream) tooLarge() bool { return s.pos-s.start > s.maxAd }

func (s *adStream) skipSpace() {
	for {
		for s.pos < s.end {
			switch s.buf[s.pos] {
			case ' ', '\t', '\n', '\r':
				s.pos++
			default:
				return
			}
		}
		if !s.fill() {
			return
		}
	}
}

// next returns the next ad's attributes, valid until the following call, or
// io.EOF after the last ad.
func (s *adStream) next() ([]rawAttr, error) {
	for {
		s.start = s.pos
		switch s.state {
		case stateDone:
			return nil, io.EOF
		case stateBegin:
			s.skipSpace()
			c, ok := s.peek()
			if !ok {
				if s.rerr != nil {
					return nil, s.truncated()
				}
				s.state = stateDone // no output: no ad matched
				continue
			}
			switch c {
			case '[':
				s.pos++
				s.skipSpace()
				if c, ok := s.peek(); ok && c == ']' {
					s.pos++
					return nil, s.finish()
				}
				s.state = stateArray
			case '{':
				s.state = stateLines
			default:
				return nil, s.fail("expected '[' or '{' at the start of the output, found %q", c)
			}
		case stateArray:
			s.skipSpace()
			return s.readAd()
		case stateArrayNext:
			s.skipSpace()
			c, ok := s.peek()
			if !ok {
				return nil, s.truncated()
			}
			switch c {
			case ',':
				s.pos++
				s.state = stateArray
			case ']':
				s.pos++
				return nil, s.finish()
			default:
				return nil, s.fail("expected ',' or ']' after an ad, found %q", c)
			}
		case stateLines:
			s.skipSpace()
			if _, ok := s.peek(); !ok {
				if s.rerr != nil {
					return nil, s.truncated()
				}
				s.state = stateDone
				continue
			}
			return s.readAd()
		}
	}
}

// finish checks that only white space follows the closing bracket.
func (s *adStream) finish() error {
	s.state = stateDone
	s.skipSpace()
	if c, ok := s.peek(); ok {
		return s.fail("unexpected %q after the closing ']'", c)
	}
	if s.rerr != nil {
		return s.truncated()
	}
	return io.EOF
}

// readAd reads one object at pos.
func (s *adStream) readAd() ([]rawAttr, error) {
	s.start = s.pos
	c, ok := s.peek()
	if !ok {
		return nil, s.truncated()
	}
	if c != '{' {
		return nil, s.fail("expected an ad ('{'), found %q", c)
	}
	s.pos++
	s.spans, s.names = s.spans[:0], s.names[:0]
	s.skipSpace()
	if c, ok := s.peek(); ok && c == '}' {
		s.pos++
		return s.doneAd()
	}
	for {
		s.skipSpace()
		c, ok := s.peek()
		if !ok {
			return nil, s.truncated()
		}
		if c != '"' {
			return nil, s.fail("expected an attribute name, found %q", c)
		}
		var sp attrSpan
		sp.nameOff = s.pos + 1 - s.start
		esc, err := s.scanString()
		if err != nil {
			return nil, err
		}
		sp.nameLen = s.pos - 1 - s.start - sp.nameOff
		if esc {
			name, err := unescapeJSON(s.scratch[:0], s.buf[s.start+sp.nameOff-1:s.pos])
			if err != nil {
				return nil, s.fail("attribute name: %v", err)
			}
			s.scratch = name
			sp.nameEsc, sp.nameOff, sp.nameLen = true, len(s.names), len(name)
			s.names = append(s.names, name...)
		}
		if sp.nameLen == 0 {
			return nil, s.fail("empty attribute name")
		}
		if name := s.attrName(sp); !utf8.Valid(name) {
			// ClassAd attribute names are identifiers; encoding/json would
			// quietly turn the bad bytes into U+FFFD.
			return nil, s.fail("attribute name %.40q is not valid UTF-8", name)
		}
		s.skipSpace()
		if c, ok := s.peek(); !ok {
			return nil, s.truncated()
		} else if c != ':' {
			return nil, s.fail("expected ':' after an attribute name, found %q", c)
		}
		s.pos++
		s.skipSpace()
		sp.valOff = s.pos - s.start
		kind, err := s.scanValue(0)
		if err != nil {
			return nil, err
		}
		sp.kind, sp.valLen = kind, s.pos-s.start-sp.valOff
		if len(s.spans) == maxAttrs {
			return nil, s.fail("more than %d attributes in one ad", maxAttrs)
		}
		s.spans = append(s.spans, sp)
		s.skipSpace()
		c, ok = s.peek()
		if !ok {
			return nil, s.truncated()
		}
		s.pos++
		switch c {
		case ',':
		case '}':
			return s.doneAd()
		default:
			s.pos--
			return nil, s.fail("expected ',' or '}' in an ad, found %q", c)
		}
	}
}

// attrName returns the name of the attribute at sp in the ad being read.
func (s *adStream) attrName(sp attrSpan) []byte {
	if sp.nameEsc {
		return s.names[sp.nameOff : sp.nameOff+sp.nameLen]
	}
	return s.buf[s.start+sp.nameOff : s.start+sp.nameOff+sp.nameLen]
}

// doneAd turns the spans of the ad just read into attributes.
func (s *adStream) doneAd() ([]rawAttr, error) {
	if s.tooLarge() {
		return nil, s.fail("ad larger than %d bytes", s.maxAd)
	}
	s.attrs = s.attrs[:0]
	ad := s.buf[s.start:s.pos]
	for _, sp := range s.spans {
		a := rawAttr{kind: sp.kind, val: ad[sp.valOff : sp.valOff+sp.valLen]}
		if sp.nameEsc {
			a.name = s.names[sp.nameOff : sp.nameOff+sp.nameLen]
		} else {
			a.name = ad[sp.nameOff : sp.nameOff+sp.nameLen]
		}
		s.attrs = append(s.attrs, a)
	}
	s.ads++
	if s.state == stateArray {
		s.state = stateArrayNext
	}
	return s.attrs, nil
}

// scanValue scans one JSON value at pos and returns its kind.
func (s *adStream) scanValue(depth int) (valueKind, error) {
	c, ok := s.peek()
	if !ok {
		return 0, s.truncated()
	}
	switch {
	case c == '"':
		_, err := s.scanString()
		return kindString, err
	case c == '-' || ('0' <= c && c <= '9'):
		return kindNumber, s.scanNumber()
	case c == 't':
		return kindTrue, s.scanWord("true")
	case c == 'f':
		return kindFalse, s.scanWord("false")
	case c == 'n':
		return kindNull, s.scanWord("null")
	case c == '[' || c == '{':
		if depth >= maxDepth {
			return 0, s.fail("values nested deeper than %d", maxDepth)
		}
		if c == '[' {
			return kindArray, s.scanArray(depth + 1)
		}
		return kindObject, s.scanObject(depth + 1)
	}
	return 0, s.fail("expected a value, found %q", c)
}

func (s *adStream) scanWord(w string) error {
	for i := 0; i < len(w); i++ {
		c, ok := s.peek()
		if !ok {
			return s.truncated()
		}
		if c != w[i] {
			return s.fail("invalid literal (expected %q)", w)
		}
		s.pos++
	}
	return nil
}

func (s *adStream) digits() (int, error) {
	n := 0
	for {
		c, ok := s.peek()
		if !ok {
			if s.rerr != nil {
				return n, s.truncated()
			}
			return n, nil
		}
		if c < '0' || c > '9' {
			return n, nil
		}
		s.pos++
		n++
	}
}

// scanNumber scans a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *adStream) scanNumber() error {
	if c, _ := s.peek(); c == '-' {
		s.pos++
	}
	c, ok := s.peek()
	if !ok {
		return s.truncated()
	}
	switch {
	case c == '0':
		s.pos++
	case '1' <= c && c <= '9':
		if _, err := s.digits(); err != nil {
			return err
		}
	default:
		return s.fail("invalid number")
	}
	if c, ok := s.peek(); ok && c == '.' {
		s.pos++
		n, err := s.digits()
		if err != nil {
			return err
		}
		if n == 0 {
			if _, ok := s.peek(); !ok {
				return s.truncated()
			}
			return s.fail("invalid number: no digit after '.'")
		}
	}
	if c, ok := s.peek(); ok && (c == 'e' || c == 'E') {
		s.pos++
		if c, ok := s.peek(); ok && (c == '+' || c == '-') {
			s.pos++
		}
		n, err := s.digits()
		if err != nil {
			return err
		}
		if n == 0 {
			if _, ok := s.peek(); !ok {
				return s.truncated()
			}
			return s.fail("invalid number: no digit in the exponent")
		}
	}
	if s.rerr != nil {
		return s.truncated()
	}
	return nil
}

// scanString scans a JSON string at pos (on its opening quote) and reports
// whether it holds escapes.
func (s *adStream) scanString() (bool, error) {
	s.pos++ // opening quote
	esc := false
	for {
		for s.pos < s.end {
			c := s.buf[s.pos]
			switch {
			case c == '"':
				s.pos++
				return esc, nil
			case c == '\\':
				esc = true
				if err := s.scanEscape(); err != nil {
					return esc, err
				}
				continue
			case c < 0x20:
				return esc, s.fail("control character %#x in a string", c)
			}
			s.pos++
		}
		if !s.more() {
			return esc, s.truncated()
		}
	}
}

func (s *adStream) scanEscape() error {
	s.pos++ // backslash
	c, ok := s.peek()
	if !ok {
		return s.truncated()
	}
	s.pos++
	switch c {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return nil
	case 'u':
		for range 4 {
			h, ok := s.peek()
			if !ok {
				return s.truncated()
			}
			if !isHex(h) {
				return s.fail("invalid \\u escape")
			}
			s.pos++
		}
		return nil
	}
	return s.fail("invalid escape \\%c", c)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func (s *adStream) scanArray(depth int) error {
	s.pos++ // [
	s.skipSpace()
	if c, ok := s.peek(); !ok {
		return s.truncated()
	} else if c == ']' {
		s.pos++
		return nil
	}
	for {
		s.skipSpace()
		if _, err := s.scanValue(depth); err != nil {
			return err
		}
		s.skipSpace()
		c, ok := s.peek()
		if !ok {
			return s.truncated()
		}
		switch c {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return nil
		default:
			return s.fail("expected ',' or ']' in a list, found %q", c)
		}
	}
}

func (s *adStream) scanObject(depth int) error {
	s.pos++ // {
	s.skipSpace()
	if c, ok := s.peek(); !ok {
		return s.truncated()
	} else if c == '}' {
		s.pos++
		return nil
	}
	for {
		s.skipSpace()
		c, ok := s.peek()
		if !ok {
			return s.truncated()
		}
		if c != '"' {
			return s.fail("expected an attribute name in a nested ad, found %q", c)
		}
		if _, err := s.scanString(); err != nil {
			return err
		}
		s.skipSpace()
		if c, ok := s.peek(); !ok {
			return s.truncated()
		} else if c != ':' {
			return s.fail("expected ':' in a nested ad, found %q", c)
		}
		s.pos++
		s.skipSpace()
		if _, err := s.scanValue(depth); err != nil {
			return err
		}
		s.skipSpace()
		c, ok = s.peek()
		if !ok {
			return s.truncated()
		}
		switch c {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return s.fail("expected ',' or '}' in a nested ad, found %q", c)
		}
	}
}
