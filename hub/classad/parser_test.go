package classad

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// TestParsePrecedence checks how operators group by printing the tree with
// every operation in parentheses.
func TestParsePrecedence(t *testing.T) {
	tests := []struct{ src, want string }{
		{"a || b && c", "(a || (b && c))"},
		{"a && b || c", "((a && b) || c)"},
		{"a | b ^ c & d", "(a | (b ^ (c & d)))"},
		{"a & b == c", "(a & (b == c))"},
		{"a == b < c", "(a == (b < c))"},
		{"a < b << c", "(a < (b << c))"},
		{"a << b + c", "(a << (b + c))"},
		{"a + b * c", "(a + (b * c))"},
		{"a - b - c", "((a - b) - c)"},
		{"a / b % c", "((a / b) % c)"},
		{"-a * b", "((-a) * b)"},
		{"!a && b", "((!a) && b)"},
		{"~a + b", "((~a) + b)"},
		{"- - a", "(-(-a))"},
		{"-a.b", "(-a.b)"},
		{"a ? b : c ? d : e", "(a ? b : (c ? d : e))"},
		{"a ? b ? c : d : e", "(a ? (b ? c : d) : e)"},
		{"a || b ? c : d", "((a || b) ? c : d)"},
		{"a ?: b ?: c", "(a ?: (b ?: c))"},
		{"a ?: b || c", "(a ?: (b || c))"},
		{"a is b && c isnt d", "((a =?= b) && (c =!= d))"},
		{"a =?= b == c", "((a =?= b) == c)"},
		{"a >>> 2 >> 1", "((a >>> 2) >> 1)"},
		{"f(a, b + 1)[0].x", "f(a,(b + 1))[0].x"},
		{"MY.a + TARGET.b", "(MY.a + TARGET.b)"},
		{"{1, 2}[1]", "{ 1, 2 }[1]"},
		{"[a = 1; b = a + 1].b", "[ a = 1; b = (a + 1) ].b"},
	}
	for _, tc := range tests {
		e, err := Parse(tc.src)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.src, err)
			continue
		}
		if got := grouped(e); got != tc.want {
			t.Errorf("Parse(%q) groups as %s, want %s", tc.src, got, tc.want)
		}
	}
}

// grouped prints e with every operator application in parentheses.
func grouped(e Expr) string {
	switch n := e.(type) {
	case *binary:
		return "(" + grouped(n.l) + " " + binOps[n.op].text + " " + grouped(n.r) + ")"
	case *unary:
		return "(" + string(n.op) + grouped(n.x) + ")"
	case *cond:
		return "(" + grouped(n.c) + " ? " + grouped(n.t) + " : " + grouped(n.f) + ")"
	case *paren:
		return grouped(n.x)
	case *callExp:
		args := make([]string, len(n.args))
		for i, a := range n.args {
			args[i] = grouped(a)
		}
		return n.name + "(" + strings.Join(args, ",") + ")"
	case *selectExpr:
		return grouped(n.x) + "." + n.name
	case *subscript:
		return grouped(n.x) + "[" + grouped(n.idx) + "]"
	case *listExpr:
		elems := make([]string, len(n.elems))
		for i, x := range n.elems {
			elems[i] = grouped(x)
		}
		return "{ " + strings.Join(elems, ", ") + " }"
	case *recordExpr:
		parts := make([]string, 0, n.ad.Len())
		for _, ent := range n.ad.order {
			parts = append(parts, ent.name+" = "+grouped(ent.expr))
		}
		return "[ " + strings.Join(parts, "; ") + " ]"
	}
	return e.String()
}

// TestParseRoundTrip checks that String prints what Parse reads back.
func TestParseRoundTrip(t *testing.T) {
	tests := []struct{ src, want string }{
		{"(TARGET.VMType is \"centos7\") && (TARGET.Arch == \"X86_64\")", `(TARGET.VMType =?= "centos7") && (TARGET.Arch == "X86_64")`},
		{"ifthenelse(MemoryUsage isnt undefined,MemoryUsage,(ImageSize + 1023) / 1024)", "ifthenelse(MemoryUsage =!= undefined,MemoryUsage,(ImageSize + 1023) / 1024)"},
		{"my.x+target.Y", "MY.x + TARGET.Y"},
		{"TRUE || False || UNDEFINED || Error", "true || false || undefined || error"},
		{"1.5e3 + .5 + 2. + 1E-7 + 1e20 + 77472532.0", "1500.0 + 0.5 + 2.0 + 1E-07 + 1E+20 + 77472532.0"},
		{"2.5e-5 + 1.25E+17 + 123456789012345680.0", "2.5E-05 + 1.25E+17 + 1.2345678901234568E+17"},
		{`"tab\there \"q\" back\\slash \101\7"`, `"tab\there \"q\" back\\slash A\007"`},
		{`'odd name' + 'is'`, `'odd name' + 'is'`},
		{"{ }", "{  }"},
		{"[ ]", "[  ]"},
		{"[a=1;b={2,3};]", "[ a = 1; b = { 2, 3 } ]"},
		{"a ?: b", "a ?: b"},
		{"x /* comment */ + // line\n y", "x + y"},
		{"(5).e + (-5)[0]", "(5).e + (-5)[0]"},
	}
	for _, tc := range tests {
		e, err := Parse(tc.src)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.src, err)
			continue
		}
		got := e.String()
		if got != tc.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.src, got, tc.want)
		}
		e2, err := Parse(got)
		if err != nil || e2.String() != got {
			t.Errorf("re-parse of %q: %v, %v", got, e2, err)
		}
	}
}

// TestPrintBuiltTrees checks that trees built without parentheses (as
// Literal and evaluation produce them) print with the parentheses they need.
func TestPrintBuiltTrees(t *testing.T) {
	x := &attrRef{name: "x", key: "x"}
	tests := []struct {
		e    Expr
		want string
	}{
		{&binary{op: opMul, l: &binary{op: opAdd, l: x, r: x}, r: x}, "(x + x) * x"},
		{&binary{op: opSub, l: x, r: &binary{op: opSub, l: x, r: x}}, "x - (x - x)"},
		{&unary{op: '-', x: Literal(IntValue(-5))}, "--5"},
		{&selectExpr{x: Literal(IntValue(5)), name: "e", key: "e"}, "(5).e"},
		{&cond{c: &cond{c: x, t: x, f: x}, t: x, f: x}, "(x ? x : x) ? x : x"},
		{&binary{op: opElvis, l: &binary{op: opElvis, l: x, r: x}, r: x}, "(x ?: x) ?: x"},
		{Literal(IntValue(-9223372036854775808)), "(-9223372036854775807 - 1)"},
		{Literal(RealValue(math.Inf(1))), `real("INF")`},
		{Literal(ListValue(IntValue(1), StringValue("a\nb"))), `{ 1, "a\nb" }`},
		{&attrRef{name: "true", key: "true"}, "'true'"},
	}
	for _, tc := range tests {
		got := tc.e.String()
		if got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
		if _, err := Parse(got); err != nil {
			t.Errorf("%q does not parse: %v", got, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		src  string
		pos  int
		want string
	}{
		{"", 0, "expected an expression, found end of input"},
		{"a +", 3, "expected an expression, found end of input"},
		{"(a", 2, "expected ')', found end of input"},
		{"a b", 2, `expected an operator or end of input, found name "b"`},
		{"f(a b)", 4, `expected ',' or ')'`},
		{"a ? b", 5, "expected ':' of the ?: operator"},
		{`"abc`, 0, "unterminated string"},
		{"a # b", 2, "unexpected character '#'"},
		{"99999999999999999999", 0, "integer literal 99999999999999999999 out of range"},
		{"1e999", 0, "real literal 1e999 out of range"},
		{"12abc", 0, "malformed number"},
		{`"a\0b"`, 2, "NUL character"},
		{"[a = 1 b = 2]", 7, "expected ';' or ']'"},
		{"MY.", 3, "expected name"},
		{"/* x", 0, "unterminated /* comment"},
		{"''", 0, "empty quoted attribute name"},
		{strings.Repeat("(", 1000) + "1" + strings.Repeat(")", 1000), 400, "nested more than 400 levels"},
		{strings.Repeat("-", 1000) + "1", 399, "nested more than 400 levels"},
	}
	for _, tc := range tests {
		_, err := Parse(tc.src)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("Parse(%.40q): error %v, want a *ParseError", tc.src, err)
			continue
		}
		if pe.Pos != tc.pos || !strings.Contains(pe.Msg, tc.want) {
			t.Errorf("Parse(%.40q) = offset %d %q, want offset %d containing %q", tc.src, pe.Pos, pe.Msg, tc.pos, tc.want)
		}
	}
}
