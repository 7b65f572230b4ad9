package classad

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics and that a parsed expression
// prints to text that parses back to the same text.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"a || b && c", `"esc\t\"\101"`, "x ?: y ? 1 : 2", "[a = 1; b = {1, 2.5e3}].b[0]",
		"MY.x =?= TARGET.y", "f(g(1), -2, !3, ~4)", "'odd name' is undefined", "-9223372036854775807 - 1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := Parse(src)
		if err != nil {
			return
		}
		s := e.String()
		e2, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q) prints %q, which does not parse: %v", src, s, err)
		}
		if s2 := e2.String(); s2 != s {
			t.Fatalf("Parse(%q) prints %q, which prints back as %q", src, s, s2)
		}
	})
}

// FuzzEval checks that evaluating any parsed expression in a matchmaking
// context never panics, is deterministic, and gives a value whose printed
// form evaluates to the same printed form.
func FuzzEval(f *testing.F) {
	job := MustParse(`[ RequestCpus = 2; RequestMemory = 2048; VMType = "centos7"; Loop = Loop + 1;
		Requirements = TARGET.Cpus >= RequestCpus && TARGET.Memory >= RequestMemory ]`).(*recordExpr).ad
	machine := MustParse(`[ Cpus = 4; Memory = 4096; VMType = "centos7"; Names = {"a", "b"};
		Start = (TARGET.VMType =?= MY.VMType) || (TARGET.VMType =?= undefined); Requirements = START ]`).(*recordExpr).ad
	for _, s := range []string{
		"Requirements", "TARGET.Start", "Loop", `regexp("^c", VMType, "i")`, `strcat(Names[0], 1.5, true)`,
		"min({1, 2.5, undefined})", `substr("abcdef", -3, 2)`, "1 / 0.0 + 7 % 2", `stringListMember("x", "x, y")`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := Parse(src)
		if err != nil {
			return
		}
		v := Eval(e, job, machine)
		if again := Eval(e, job, machine); again.String() != v.String() {
			t.Fatalf("%q evaluates to %v, then to %v", src, v, again)
		}
		printed := v.String()
		pe, err := Parse(printed)
		if err != nil {
			t.Fatalf("%q evaluates to %s, which does not parse: %v", src, printed, err)
		}
		if v2 := Eval(pe, nil, nil).String(); v2 != printed && !strings.Contains(printed, "NaN") {
			t.Fatalf("%q evaluates to %s, which evaluates to %s", src, printed, v2)
		}
	})
}

// FuzzParseJSON checks that any input gives ads or an error, never a panic,
// and that the ads can be evaluated.
func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{
		"", "[\n]\n", `[{"A": 1, "B": "\/Expr(A + 1)\/", "C": null, "D": [1, 2.0], "E": {"F": true}}]`,
		"{\"A\": 1}\n{\"A\": \"x\"}\n", `[{"R": "\/Expr((TARGET.VMType is \"centos7\"))\/"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ads, err := ParseJSON(data)
		if err != nil {
			return
		}
		for _, ad := range ads {
			for _, name := range ad.Names() {
				ad.Eval(name)
			}
		}
	})
}

// FuzzParseLong checks that any input gives ads or an error, never a panic,
// and that printed ads parse back to the same text.
func FuzzParseLong(f *testing.F) {
	for _, s := range []string{
		"A = 1\nB = A + 1\n\nC = \"x\"\n", "# c\nRequirements = START && (WithinResourceLimits)\n",
		"L = { 1,2 }\nR = [ a = 1; ]\n", "bad line\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		ads, err := ParseLong(strings.NewReader(in))
		if err != nil {
			return
		}
		var printed bytes.Buffer
		for i, ad := range ads {
			if i > 0 {
				printed.WriteString("\n")
			}
			printed.WriteString(ad.String())
		}
		again, err := ParseLong(bytes.NewReader(printed.Bytes()))
		if err != nil {
			t.Fatalf("printed ads do not parse: %v\n%s", err, printed.String())
		}
		var reprinted bytes.Buffer
		for i, ad := range again {
			if i > 0 {
				reprinted.WriteString("\n")
			}
			reprinted.WriteString(ad.String())
			ad.Eval("Requirements")
		}
		if reprinted.String() != printed.String() {
			t.Fatalf("ads print as\n%s\nthen as\n%s", printed.String(), reprinted.String())
		}
	})
}
