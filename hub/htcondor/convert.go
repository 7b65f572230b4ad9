package htcondor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/canopy-grid/canopy/hub/classad"
)

// unescapeJSON appends the content of the quoted JSON string q (quotes
// included, already scanned as valid) to dst.
func unescapeJSON(dst, q []byte) ([]byte, error) {
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return dst, errors.New("not a quoted string")
	}
	q = q[1 : len(q)-1]
	for len(q) > 0 {
		i := bytes.IndexByte(q, '\\')
		if i < 0 {
			return append(dst, q...), nil
		}
		dst = append(dst, q[:i]...)
		q = q[i:]
		if len(q) < 2 {
			return dst, errors.New("bad escape")
		}
		switch c := q[1]; c {
		case '"', '\\', '/':
			dst = append(dst, c)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, n := decodeU(q)
			if n == 0 {
				return dst, errors.New("bad \\u escape")
			}
			dst = utf8.AppendRune(dst, r)
			q = q[n:]
			continue
		default:
			return dst, fmt.Errorf("bad escape \\%c", c)
		}
		q = q[2:]
	}
	return dst, nil
}

// decodeU decodes a \uXXXX escape (or a surrogate pair of them) at the start
// of q, as encoding/json does: a lone surrogate becomes U+FFFD.
func decodeU(q []byte) (rune, int) {
	hex := func(b []byte) (rune, bool) {
		if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(string(b[2:6]), 16, 16)
		return rune(v), err == nil
	}
	r, ok := hex(q)
	if !ok {
		return 0, 0
	}
	if utf16.IsSurrogate(r) {
		if r2, ok := hex(q[6:]); ok {
			if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
				return d, 12
			}
		}
		return utf8.RuneError, 6
	}
	return r, 6
}

// exprCache turns raw JSON values into ClassAd expressions, parsing each
// distinct "/Expr(...)/" text once. It is safe for concurrent use; it
// forgets everything when it holds maxEntries, so memory stays bounded.
type exprCache struct {
	mu         sync.Mutex
	m          map[string]classad.Expr
	maxEntries int
}

func newExprCache(maxEntries int) *exprCache {
	return &exprCache{m: map[string]classad.Expr{}, maxEntries: maxEntries}
}

// expr converts one raw attribute value as HTCondor's JSON writer means it:
// a string "/Expr(text)/" is the unevaluated expression text, any other
// string a string literal; a number without '.', 'e' or 'E' an integer,
// else a real; null undefined; lists and nested ads as classad.AdFromJSON
// reads them.
func (c *exprCache) expr(kind valueKind, raw []byte) (classad.Expr, error) {
	switch kind {
	case kindTrue:
		return classad.Literal(classad.BoolValue(true)), nil
	case kindFalse:
		return classad.Literal(classad.BoolValue(false)), nil
	case kindNull:
		return classad.Literal(classad.UndefinedValue()), nil
	case kindNumber:
		v, err := numberValue(raw)
		if err != nil {
			return nil, err
		}
		return classad.Literal(v), nil
	case kindString:
		if !bytes.HasPrefix(raw, []byte(`"\/Expr(`)) && !bytes.HasPrefix(raw, []byte(`"/Expr(`)) {
			s, err := unescapeJSON(nil, raw)
			if err != nil {
				return nil, err
			}
			return classad.Literal(classad.StringValue(string(s))), nil
		}
		c.mu.Lock()
		e, ok := c.m[string(raw)]
		c.mu.Unlock()
		if ok {
			return e, nil
		}
		s, err := unescapeJSON(nil, raw)
		if err != nil {
			return nil, err
		}
		text := string(s)
		if !strings.HasPrefix(text, "/Expr(") || !strings.HasSuffix(text, ")/") {
			return classad.Literal(classad.StringValue(text)), nil
		}
		e, err = classad.Parse(text[len("/Expr(") : len(text)-len(")/")])
		if err != nil {
			return nil, fmt.Errorf("expression %s: %w", clip(text, 120), err)
		}
		c.mu.Lock()
		if len(c.m) >= c.maxEntries {
			clear(c.m)
		}
		c.m[string(raw)] = e
		c.mu.Unlock()
		return e, nil
	case kindArray, kindObject:
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		ad, err := classad.AdFromJSON(map[string]any{"v": v})
		if err != nil {
			return nil, err
		}
		e, _ := ad.Lookup("v")
		return e, nil
	}
	return nil, fmt.Errorf("unknown value kind %d", kind)
}

// numberValue reads a JSON number as HTCondor wrote it.
func numberValue(raw []byte) (classad.Value, error) {
	if !bytes.ContainsAny(raw, ".eE") {
		if i, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
			return classad.IntValue(i), nil
		}
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil && !math.IsInf(f, 0) {
		return classad.Value{}, fmt.Errorf("number %s: %w", clip(string(raw), 40), err)
	}
	if math.IsInf(f, 0) {
		return classad.Value{}, fmt.Errorf("number %s is out of range", clip(string(raw), 40))
	}
	return classad.RealValue(f), nil
}

// rawInt reads a raw JSON integer (JobStatus, ClusterId); ok is false for
// anything else.
func rawInt(kind valueKind, raw []byte) (int64, bool) {
	if kind != kindNumber || len(raw) == 0 || len(raw) > 19 {
		return 0, false
	}
	var n int64
	neg := raw[0] == '-'
	if neg {
		raw = raw[1:]
	}
	if len(raw) == 0 {
		return 0, false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// buildAd makes a ClassAd of the attributes.
func (c *exprCache) buildAd(attrs []rawAttr) (*classad.Ad, error) {
	ad := classad.NewAd()
	for _, a := range attrs {
		e, err := c.expr(a.kind, a.val)
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %w", clip(string(a.name), 80), err)
		}
		ad.Set(string(a.name), e)
	}
	return ad, nil
}

// clip shortens s for error messages.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:n]) + "..."
}

// lowerASCII lower-cases ASCII letters of b into dst.
func lowerASCII(dst, b []byte) []byte {
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}
