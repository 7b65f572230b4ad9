package classad

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// Ad is a ClassAd: a set of attributes, each bound to an expression. Names
// are case-insensitive and keep the spelling they were set with. An Ad may be
// evaluated from many goroutines at once but must not be changed meanwhile.
type Ad struct {
	attrs map[string]*attrEntry // by lower-cased name
	order []*attrEntry          // insertion order
}

type attrEntry struct {
	name string
	expr Expr
}

// NewAd returns an empty Ad.
func NewAd() *Ad { return &Ad{attrs: map[string]*attrEntry{}} }

// Set binds name to e, replacing any attribute of the same name in any case.
func (a *Ad) Set(name string, e Expr) {
	key := lowerASCII(name)
	if old, ok := a.attrs[key]; ok {
		old.name, old.expr = name, e
		return
	}
	ent := &attrEntry{name: name, expr: e}
	a.attrs[key] = ent
	a.order = append(a.order, ent)
}

// SetValue binds name to the literal value v.
func (a *Ad) SetValue(name string, v Value) { a.Set(name, Literal(v)) }

// SetExpr parses src and binds name to it.
func (a *Ad) SetExpr(name, src string) error {
	e, err := Parse(src)
	if err != nil {
		return fmt.Errorf("classad: attribute %s: %w", name, err)
	}
	a.Set(name, e)
	return nil
}

// Lookup returns the expression bound to name (in any case).
func (a *Ad) Lookup(name string) (Expr, bool) {
	if ent := a.lookupName(name); ent != nil {
		return ent.expr, true
	}
	return nil, false
}

// lookupName finds name in any case, folding short names on the stack so
// that lookups do not allocate.
func (a *Ad) lookupName(name string) *attrEntry {
	if a == nil {
		return nil
	}
	var buf [64]byte
	if len(name) > len(buf) {
		return a.attrs[lowerASCII(name)]
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return a.attrs[string(buf[:len(name)])]
}

func (a *Ad) lookupKey(key string) *attrEntry {
	if a == nil {
		return nil
	}
	return a.attrs[key]
}

// Delete removes the attribute name (in any case), if present.
func (a *Ad) Delete(name string) {
	key := lowerASCII(name)
	ent, ok := a.attrs[key]
	if !ok {
		return
	}
	delete(a.attrs, key)
	for i, e := range a.order {
		if e == ent {
			a.order = append(a.order[:i], a.order[i+1:]...)
			break
		}
	}
}

// Len returns the number of attributes.
func (a *Ad) Len() int {
	if a == nil {
		return 0
	}
	return len(a.order)
}

// Names returns the attribute names in the order they were first set.
func (a *Ad) Names() []string {
	if a == nil {
		return nil
	}
	names := make([]string, len(a.order))
	for i, e := range a.order {
		names[i] = e.name
	}
	return names
}

// Clone returns a copy of a that can be changed without affecting a.
func (a *Ad) Clone() *Ad {
	c := NewAd()
	for _, e := range a.order {
		c.Set(e.name, e.expr)
	}
	return c
}

// String returns the ad in the -long format: one "Name = expression" line
// per attribute, in insertion order.
func (a *Ad) String() string {
	var b strings.Builder
	for _, e := range a.order {
		b.WriteString(e.name)
		b.WriteString(" = ")
		e.expr.write(&b)
		b.WriteByte('\n')
	}
	return b.String()
}

// writeRecord writes a as a nested ClassAd literal: [ a = 1; b = 2 ].
func (a *Ad) writeRecord(b *strings.Builder) {
	b.WriteString("[ ")
	for i, e := range a.order {
		if i > 0 {
			b.WriteString("; ")
		}
		writeName(b, e.name)
		b.WriteString(" = ")
		e.expr.write(b)
	}
	b.WriteString(" ]")
}

// ParseJSON decodes the output of condor_q, condor_status or condor_history
// with -json (a JSON array of objects, or nothing at all when no ad matched)
// or -jsonl (one object per line) into ads. See AdFromJSON for how values map.
func ParseJSON(data []byte) ([]*Ad, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, nil
	}
	var objs []map[string]any
	if trimmed[0] == '[' {
		if err := dec.Decode(&objs); err != nil {
			return nil, fmt.Errorf("classad: decode JSON ad list: %w", err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, errors.New("classad: decode JSON ad list: trailing data after the array")
		}
	} else {
		for {
			var obj map[string]any
			err := dec.Decode(&obj)
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("classad: decode JSON ad %d: %w", len(objs), err)
			}
			objs = append(objs, obj)
		}
	}
	ads := make([]*Ad, 0, len(objs))
	for i, obj := range objs {
		if obj == nil {
			return nil, fmt.Errorf("classad: JSON ad %d: expected an object, found null", i)
		}
		ad, err := AdFromJSON(obj)
		if err != nil {
			return nil, fmt.Errorf("classad: JSON ad %d: %w", i, err)
		}
		ads = append(ads, ad)
	}
	return ads, nil
}

// UnmarshalJSON decodes one JSON object into a (see AdFromJSON).
func (a *Ad) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return fmt.Errorf("classad: decode JSON ad: %w", err)
	}
	ad, err := AdFromJSON(obj)
	if err != nil {
		return err
	}
	*a = *ad
	return nil
}

// AdFromJSON builds an Ad from one decoded JSON object, as HTCondor's JSON
// writer produces it: a string "/Expr(text)/" is the unevaluated expression
// text, any other string is a string literal, json.Number is an integer
// unless it has a fraction or an exponent, float64 is a real (decode with
// UseNumber to keep integers), null is undefined, arrays are lists and
// objects are nested ads. Keys are taken in case-insensitive order.
func AdFromJSON(obj map[string]any) (*Ad, error) {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if c := compareFold(keys[i], keys[j]); c != 0 {
			return c < 0
		}
		return keys[i] < keys[j]
	})
	ad := NewAd()
	for _, k := range keys {
		e, err := exprFromJSON(obj[k])
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %w", k, err)
		}
		ad.Set(k, e)
	}
	return ad, nil
}

func exprFromJSON(v any) (Expr, error) {
	switch v := v.(type) {
	case nil:
		return Literal(undefinedValue), nil
	case bool:
		return Literal(BoolValue(v)), nil
	case json.Number:
		s := string(v)
		if !strings.ContainsAny(s, ".eE") {
			if i, err := strconv.ParseInt(s, 10, 64); err == nil {
				return Literal(IntValue(i)), nil
			}
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("number %s out of range", s)
		}
		return Literal(RealValue(f)), nil
	case float64:
		return Literal(RealValue(v)), nil
	case int:
		return Literal(IntValue(int64(v))), nil
	case int64:
		return Literal(IntValue(v)), nil
	case string:
		if len(v) >= len("/Expr()/") && strings.HasPrefix(v, "/Expr(") && strings.HasSuffix(v, ")/") {
			e, err := Parse(v[len("/Expr(") : len(v)-len(")/")])
			if err != nil {
				return nil, fmt.Errorf("expression %q: %w", v, err)
			}
			return e, nil
		}
		return Literal(StringValue(v)), nil
	case []any:
		elems := make([]Expr, len(v))
		vals := make([]Value, len(v))
		allLiteral := true
		for i, x := range v {
			e, err := exprFromJSON(x)
			if err != nil {
				return nil, fmt.Errorf("list element %d: %w", i, err)
			}
			elems[i] = e
			if lit, ok := e.(*literal); ok {
				vals[i] = lit.v
			} else {
				allLiteral = false
			}
		}
		if allLiteral {
			return Literal(ListValue(vals...)), nil
		}
		return &listExpr{elems: elems}, nil
	case map[string]any:
		nested, err := AdFromJSON(v)
		if err != nil {
			return nil, fmt.Errorf("nested ad: %w", err)
		}
		return &recordExpr{ad: nested}, nil
	}
	return nil, fmt.Errorf("unsupported JSON value of type %T", v)
}

// maxLongLine bounds one line of -long output (a variable so that tests can
// lower it).
var maxLongLine = 16 << 20

// ParseLong parses the -long output of condor_q, condor_status or
// condor_history (and .ads files): "Name = expression" lines, with ads
// separated by blank lines. Lines starting with '#' or "--" are skipped.
func ParseLong(r io.Reader) ([]*Ad, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, min(64<<10, maxLongLine)), maxLongLine)
	var ads []*Ad
	var cur *Ad
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			cur = nil
			continue
		}
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, "--") {
			continue
		}
		name, src, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || !validName(name) {
			return nil, fmt.Errorf("classad: -long line %d: expected \"Name = expression\", found %q", n, clip(line))
		}
		e, err := Parse(src)
		if err != nil {
			return nil, fmt.Errorf("classad: -long line %d: attribute %s: %w", n, name, err)
		}
		if cur == nil {
			cur = NewAd()
			ads = append(ads, cur)
		}
		cur.Set(name, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("classad: read -long output: %w", err)
	}
	return ads, nil
}

func validName(s string) bool {
	if s == "" || !isIdentStart(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isIdentChar(s[i]) {
			return false
		}
	}
	return true
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
