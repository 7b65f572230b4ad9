package classad

import (
	"math"
	"strconv"
	"strings"
)

// Kind is the type of a ClassAd value.
type Kind uint8

// The ClassAd value types. Absolute and relative time values are not supported.
const (
	UndefinedKind Kind = iota
	ErrorKind
	BoolKind
	IntKind
	RealKind
	StringKind
	ListKind
	AdKind
)

var kindNames = [...]string{"undefined", "error", "boolean", "integer", "real", "string", "list", "classad"}

// String returns the ClassAd name of the kind ("integer", "string", ...).
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is a ClassAd value: undefined, error, boolean, integer, real, string,
// list or nested ClassAd. The zero Value is undefined.
type Value struct {
	kind Kind
	i    int64 // IntKind; BoolKind as 0 or 1; RealKind as IEEE 754 bits
	s    string
	ref  *ref // ListKind, AdKind
}

// ref holds the elements of a list, or a nested ClassAd together with the
// scope its attributes are evaluated in. Keeping them out of line keeps Value
// small, which makes evaluation faster.
type ref struct {
	list []Value
	ad   *Ad
	sc   scope
}

var (
	undefinedValue = Value{kind: UndefinedKind}
	errorValue     = Value{kind: ErrorKind}
	trueValue      = Value{kind: BoolKind, i: 1}
	falseValue     = Value{kind: BoolKind}
)

// UndefinedValue returns the undefined value.
func UndefinedValue() Value { return undefinedValue }

// ErrorValue returns the error value.
func ErrorValue() Value { return errorValue }

// BoolValue returns a boolean value.
func BoolValue(b bool) Value {
	if b {
		return trueValue
	}
	return falseValue
}

// IntValue returns an integer value.
func IntValue(i int64) Value { return Value{kind: IntKind, i: i} }

// RealValue returns a real value.
func RealValue(f float64) Value { return Value{kind: RealKind, i: int64(math.Float64bits(f))} }

// float returns the real held by v.
func (v Value) float() float64 { return math.Float64frombits(uint64(v.i)) }

// StringValue returns a string value.
func StringValue(s string) Value { return Value{kind: StringKind, s: s} }

// ListValue returns a list value holding vs.
func ListValue(vs ...Value) Value { return Value{kind: ListKind, ref: &ref{list: vs}} }

// AdValue returns a nested ClassAd value holding ad.
func AdValue(ad *Ad) Value {
	if ad == nil {
		ad = NewAd()
	}
	return Value{kind: AdKind, ref: &ref{ad: ad, sc: scope{ad: ad, my: ad}}}
}

// Kind returns the type of v.
func (v Value) Kind() Kind { return v.kind }

// IsUndefined reports whether v is the undefined value.
func (v Value) IsUndefined() bool { return v.kind == UndefinedKind }

// IsError reports whether v is the error value.
func (v Value) IsError() bool { return v.kind == ErrorKind }

// IsTrue reports whether v is exactly the boolean true.
func (v Value) IsTrue() bool { return v.kind == BoolKind && v.i != 0 }

// Bool returns the boolean held by v and whether v is a boolean.
func (v Value) Bool() (bool, bool) { return v.i != 0, v.kind == BoolKind }

// Int returns the integer held by v and whether v is an integer.
func (v Value) Int() (int64, bool) { return v.i, v.kind == IntKind }

// Real returns the real held by v and whether v is a real.
func (v Value) Real() (float64, bool) { return v.float(), v.kind == RealKind }

// Number returns v as a float64 when v is an integer or a real.
func (v Value) Number() (float64, bool) {
	switch v.kind {
	case IntKind:
		return float64(v.i), true
	case RealKind:
		return v.float(), true
	}
	return 0, false
}

// Str returns the string held by v and whether v is a string.
func (v Value) Str() (string, bool) { return v.s, v.kind == StringKind }

// List returns the elements of v and whether v is a list.
func (v Value) List() ([]Value, bool) {
	if v.kind != ListKind {
		return nil, false
	}
	return v.ref.list, true
}

// Ad returns the nested ClassAd held by v and whether v is one.
func (v Value) Ad() (*Ad, bool) {
	if v.kind != AdKind {
		return nil, false
	}
	return v.ref.ad, true
}

// boolEquiv returns the truth of v when v is a boolean or a number (non-zero
// is true), as ClassAd logical operators and conditionals treat them.
func boolEquiv(v Value) (b, ok bool) {
	switch v.kind {
	case BoolKind, IntKind:
		return v.i != 0, true
	case RealKind:
		return v.float() != 0, true
	}
	return false, false
}

// String returns v in ClassAd literal syntax, as condor_status -af:V prints
// it: strings are quoted, reals always carry a '.' or an exponent. Parse reads
// it back, except a string holding a NUL byte (only JSON can supply one),
// which prints as \000 and is rejected, as HTCondor rejects it.
func (v Value) String() string {
	var b strings.Builder
	v.write(&b)
	return b.String()
}

func (v Value) write(b *strings.Builder) {
	switch v.kind {
	case UndefinedKind:
		b.WriteString("undefined")
	case ErrorKind:
		b.WriteString("error")
	case BoolKind:
		if v.i != 0 {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case IntKind:
		if v.i == math.MinInt64 {
			// The lexer reads only non-negative literals; keep the text parseable.
			b.WriteString("(-9223372036854775807 - 1)")
			return
		}
		b.WriteString(strconv.FormatInt(v.i, 10))
	case RealKind:
		b.WriteString(formatReal(v.float()))
	case StringKind:
		writeQuoted(b, v.s, '"')
	case ListKind:
		b.WriteString("{ ")
		for i, e := range v.ref.list {
			if i > 0 {
				b.WriteString(", ")
			}
			e.write(b)
		}
		b.WriteString(" }")
	case AdKind:
		v.ref.ad.writeRecord(b)
	}
}

// formatReal formats f so that it reads back as the same real: like C's
// "%.16G" (plain notation for exponents -4..15) but with the shortest digits
// that round-trip, and always with a '.' or an exponent (1E+20, 3.0).
func formatReal(f float64) string {
	switch {
	case math.IsNaN(f):
		return `real("NaN")`
	case math.IsInf(f, 1):
		return `real("INF")`
	case math.IsInf(f, -1):
		return `-real("INF")`
	}
	e := strconv.FormatFloat(f, 'e', -1, 64)
	mant, exp, _ := strings.Cut(e, "e")
	x, _ := strconv.Atoi(exp)
	if x < -4 || x >= 16 {
		sign := "+"
		if x < 0 {
			sign, x = "-", -x
		}
		es := strconv.Itoa(x)
		if len(es) < 2 {
			es = "0" + es
		}
		return mant + "E" + sign + es
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// writeQuoted writes s as a ClassAd string (double quote) or quoted attribute
// name (single quote) with backslash escapes the lexer reads back.
func writeQuoted(b *strings.Builder, s string, quote byte) {
	b.WriteByte(quote)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		case quote:
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			if c < 0x20 || c == 0x7f {
				b.WriteByte('\\')
				b.WriteByte('0' + c>>6)
				b.WriteByte('0' + (c>>3)&7)
				b.WriteByte('0' + c&7)
				continue
			}
			b.WriteByte(c)
		}
	}
	b.WriteByte(quote)
}

// lowerASCII folds ASCII upper-case letters, as strcasecmp does; it returns s
// itself when there is nothing to fold.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// compareFold compares a and b like strcasecmp: byte-wise after folding ASCII
// letters to lower case.
func compareFold(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			if ca < cb {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}
