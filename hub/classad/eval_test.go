package classad

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func mustAd(t testing.TB, src string) *Ad {
	t.Helper()
	ads, err := ParseLong(strings.NewReader(src))
	if err != nil || len(ads) != 1 {
		t.Fatalf("ad %q: %v", src, err)
	}
	return ads[0]
}

// TestLogicTruthTables checks && || ! ?: over true, false, undefined,
// error, as the ClassAd reference defines them.
func TestLogicTruthTables(t *testing.T) {
	vals := []string{"true", "false", "undefined", "error"}
	and := [4][4]string{
		{"true", "false", "undefined", "error"},
		{"false", "false", "false", "false"},
		{"undefined", "false", "undefined", "error"},
		{"error", "error", "error", "error"},
	}
	or := [4][4]string{
		{"true", "true", "true", "true"},
		{"true", "false", "undefined", "error"},
		{"true", "undefined", "undefined", "error"},
		{"error", "error", "error", "error"},
	}
	for i, a := range vals {
		for j, b := range vals {
			for _, tc := range []struct{ op, want string }{{"&&", and[i][j]}, {"||", or[i][j]}} {
				src := a + " " + tc.op + " " + b
				if got := Eval(MustParse(src), nil, nil).String(); got != tc.want {
					t.Errorf("%s = %s, want %s", src, got, tc.want)
				}
			}
		}
	}
	not := map[string]string{"true": "false", "false": "true", "undefined": "undefined", "error": "error"}
	cond := map[string]string{"true": "1", "false": "2", "undefined": "undefined", "error": "error"}
	for _, a := range vals {
		if got := Eval(MustParse("!"+a), nil, nil).String(); got != not[a] {
			t.Errorf("!%s = %s, want %s", a, got, not[a])
		}
		if got := Eval(MustParse(a+" ? 1 : 2"), nil, nil).String(); got != cond[a] {
			t.Errorf("%s ? 1 : 2 = %s, want %s", a, got, cond[a])
		}
		if got := Eval(MustParse("ifThenElse("+a+", 1, 2)"), nil, nil).String(); got != cond[a] {
			t.Errorf("ifThenElse(%s, 1, 2) = %s, want %s", a, got, cond[a])
		}
	}
}

func TestEval(t *testing.T) {
	my := mustAd(t, `Cpus = 4
Memory = 4096
VMType = "centos7"
Name = "slot1@Host"
Mixed = "AbC"
Loads = { 1, 2.5, 3 }
Nested = [ a = 1; b = a + Cpus; c = [ d = b * 2 ] ]
SelfRef = SelfRef + 1
LoopA = LoopB
LoopB = LoopA
Chain = Memory / 1024
Shadow = "machine"
`)
	target := mustAd(t, `RequestCpus = 2
RequestMemory = ifthenelse(MemoryUsage =!= undefined, MemoryUsage, (ImageSize + 1023) / 1024)
ImageSize = 2000000
Shadow = "job"
OnlyJob = 7
Back = TARGET.Cpus * 10
`)
	tests := []struct{ src, want string }{
		// literals and case-insensitive keywords
		{"TRUE", "true"}, {"False", "false"}, {"UnDeFiNeD", "undefined"}, {"ERROR", "error"},
		// arithmetic, promotion, C division
		{"7 / 2", "3"}, {"-7 / 2", "-3"}, {"7 % -3", "1"}, {"-7 % 3", "-1"}, {"7.0 / 2", "3.5"},
		{"1 + 2.0", "3.0"}, {"2 * 3", "6"}, {"true + 1", "2"}, {"1 / 0", "error"}, {"1 % 0", "error"},
		{"1.0 / 0", "error"}, {"5.5 % 2", "error"}, {"1e308 * 10", "error"}, {"-1e308 * 10", `-real("INF")`},
		{"9223372036854775807 + 1", "(-9223372036854775807 - 1)"},
		{"(-9223372036854775807 - 1) / -1", "9223372036854775807"},
		{`"a" + 1`, "error"}, {"-true", "error"}, {`-"a"`, "error"}, {"+true", "error"}, {"+2.5", "2.5"},
		{"1 + undefined", "undefined"}, {"undefined + error", "error"}, {"error * undefined", "error"},
		// comparisons
		{"3 < 4.5", "true"}, {"4 == 4.0", "true"}, {"true == 1", "true"}, {"false < true", "true"},
		{`"abc" == "ABC"`, "true"}, {`"abc" < "ABD"`, "true"}, {`"b" > "A"`, "true"}, {`"abc" != "abd"`, "true"},
		{`"1" == 1`, "error"}, {`"a" < true`, "error"}, {"{1} == {1}", "error"}, {"10 == undefined", "undefined"},
		{"undefined == undefined", "undefined"}, {"error == undefined", "error"},
		// meta-equality
		{`"ABC" =?= "abc"`, "false"}, {`"abc" is "abc"`, "true"}, {"1 =?= 1.0", "false"}, {"true =?= 1", "false"},
		{"undefined =?= undefined", "true"}, {"error =?= error", "true"}, {"error =?= undefined", "false"},
		{"10 =!= undefined", "true"}, {"undefined isnt undefined", "false"}, {"{1} =?= {1}", "error"},
		// logic with numbers and strings
		{"1 && 2.5", "true"}, {"0 || 0.0", "false"}, {"0 && error", "false"}, {"1 || error", "true"},
		{`"x" && true`, "error"}, {`true && "x"`, "error"}, {`true || "x"`, "true"}, {`false || "x"`, "error"},
		{"!0", "true"}, {`!"x"`, "error"}, {"2 ? 1 : 0", "1"}, {`"s" ? 1 : 0`, "error"},
		{"undefined ?: 5", "5"}, {"error ?: 5", "error"}, {"false ?: 5", "false"}, {"NoSuch ?: Cpus", "4"},
		// bitwise
		{"6 | 1", "7"}, {"6 & 3", "2"}, {"6 ^ 3", "5"}, {"~0", "-1"}, {"1 << 3", "8"}, {"-16 >> 2", "-4"},
		{"-1 >>> 60", "15"}, {"1 << 64", "1"}, {"true | 1", "error"}, {"~true", "error"}, {"~undefined", "undefined"},
		// strings and escapes
		{`"a\tb"`, `"a\tb"`}, {`size("a\tb")`, "3"}, {`size("\101\102")`, "2"}, {`"\101" == "A"`, "true"},
		{`"\q"`, `"q"`}, {`size("\\")`, "1"}, {`"it\'s"`, `"it's"`}, {`strcat("x", "\n")`, `"x\n"`},
		// attribute references and scopes
		{"cpus", "4"}, {"MY.CPUS", "4"}, {"my.memory / 1024", "4"}, {"TARGET.RequestCpus", "2"},
		{"RequestCpus", "2"}, {"Shadow", `"machine"`}, {"TARGET.Shadow", `"job"`}, {"MY.OnlyJob", "undefined"},
		{"TARGET.Cpus", "undefined"}, {"TARGET.Back", "40"}, {"TARGET.RequestMemory", "1954"},
		{"NoSuchAttr", "undefined"}, {"NoSuchAttr =?= undefined", "true"}, {"Chain", "4"},
		// nested ads, lists, subscripts
		{"Nested.b", "5"}, {"Nested.c.d", "10"}, {"Nested.nosuch", "undefined"}, {`Nested["B"]`, "5"},
		{"Loads[1]", "2.5"}, {"Loads[3]", "error"}, {"Loads[-1]", "error"}, {"Loads[undefined]", "undefined"},
		{`Loads["x"]`, "error"}, {"Cpus.x", "error"}, {"NoSuch.x", "undefined"}, {"[ x = Cpus ].x", "4"},
		{"[a = 1; b = a + 1].b", "2"}, {"{Cpus, Memory}", "{ 4, 4096 }"}, {"Nested", "[ a = 1; b = a + Cpus; c = [ d = b * 2 ] ]"},
		// cycles and self reference
		{"SelfRef", "error"}, {"LoopA", "error"}, {"isError(LoopB)", "true"},
	}
	for _, tc := range tests {
		e, err := Parse(tc.src)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.src, err)
			continue
		}
		if got := Eval(e, my, target).String(); got != tc.want {
			t.Errorf("%s = %s, want %s", tc.src, got, tc.want)
		}
	}
}

func TestFunctions(t *testing.T) {
	my := mustAd(t, `Sites = "CERN, FNAL,  wisc"
Name = "slot1@host.example.org"
Empty = {  }
`)
	tests := []struct{ src, want string }{
		{"ifThenElse(1 > 2, \"a\", \"b\")", `"b"`}, {"ifThenElse(0.0, 1, 2)", "2"}, {`ifThenElse("x", 1, 2)`, "error"},
		{"ifThenElse(true, 1, 1/0)", "1"}, {"ifThenElse(true, 1)", "error"},
		{"isUndefined(NoSuch)", "true"}, {"isUndefined(1)", "false"}, {"isError(1/0)", "true"},
		{`isString("a")`, "true"}, {"isInteger(1)", "true"}, {"isInteger(1.0)", "false"}, {"isReal(1.0)", "true"},
		{"isBoolean(true)", "true"}, {"isBoolean(1)", "false"}, {"isList({})", "true"}, {"isClassAd([])", "true"},
		{"isUndefined(1, 2)", "error"},
		{`strcmp("a", "b")`, "-1"}, {`strcmp("b", "a")`, "1"}, {`strcmp("A", "a")`, "-1"}, {`stricmp("A", "a")`, "0"},
		{`strcmp(1, "1")`, "0"}, {"strcmp(undefined, \"a\")", "undefined"},
		{`regexp("^cent", "centos7")`, "true"}, {`regexp("^CENT", "centos7")`, "false"}, {`regexp("^CENT", "centos7", "i")`, "true"},
		{`regexp("a.b", "a\nb")`, "false"}, {`regexp("a.b", "a\nb", "s")`, "true"}, {`regexp("^b", "a\nb", "m")`, "true"},
		{`regexp("(", "x")`, "error"}, {`regexp("\\.org$", Name)`, "true"}, {`regexp(1, "x")`, "error"},
		{`regexp("x", undefined)`, "undefined"}, {`regexp("x", error)`, "error"}, {`regexp("(a)\\1", "aa")`, "error"},
		{`member(2, {1, 2, 3})`, "true"}, {`member("B", {"a", "b"})`, "true"}, {`member(4, {1, 2})`, "false"},
		{`member(undefined, {1})`, "undefined"}, {`member(1, undefined)`, "undefined"}, {`member(1, 2)`, "error"},
		{`member({1}, {1})`, "error"}, {`identicalMember("B", {"a", "b"})`, "false"}, {`identicalMember("b", {"a", "b"})`, "true"},
		{`identicalMember(undefined, {1, undefined})`, "true"},
		{`stringListMember("FNAL", Sites)`, "true"}, {`stringListMember("wisc", Sites)`, "true"}, {`stringListMember("fnal", Sites)`, "false"},
		{`stringListIMember("fnal", Sites)`, "true"}, {`stringListMember("a", "a;b", ";")`, "true"}, {`stringListMember("", Sites)`, "false"},
		{`stringListMember(undefined, undefined)`, "undefined"}, {`stringListMember("a", undefined)`, "false"},
		{`stringListMember(1, "1")`, "error"}, {`stringListMember("a")`, "error"},
		{`size("abc")`, "3"}, {"size({1, 2})", "2"}, {"size([a = 1; b = 2])", "2"}, {"size(Empty)", "0"},
		{"size(undefined)", "undefined"}, {"size(1)", "error"},
		{`strcat("a", 1, "b", 2.5, true)`, `"a1b2.5true"`}, {"strcat()", `""`}, {`strcat("a", undefined)`, "undefined"},
		{`strcat("a", 1/0)`, "error"}, {`strcat({1, "x"})`, `"{ 1, \"x\" }"`},
		{`substr("abcdef", 2)`, `"cdef"`}, {`substr("abcdef", 2, 2)`, `"cd"`}, {`substr("abcdef", -2)`, `"ef"`},
		{`substr("abcdef", 1, -2)`, `"bcd"`}, {`substr("abc", 10)`, `""`}, {`substr("abc", 1, 0)`, `""`},
		{`substr("abc", -10, 2)`, `"ab"`}, {`substr("abc", 1, -10)`, `""`}, {`substr(undefined, 1)`, "undefined"}, {`substr("abc", "1")`, "error"},
		{`toLower("AbC")`, `"abc"`}, {`toUpper("AbC")`, `"ABC"`}, {"toUpper(12)", `"12"`}, {"toLower(undefined)", "undefined"},
		{`string(1.5)`, `"1.5"`}, {`string(undefined)`, "error"},
		{"int(3.7)", "3"}, {"int(-3.7)", "-3"}, {`int("42")`, "42"}, {`int("4.9")`, "4"}, {`int("x")`, "error"},
		{"int(true)", "1"}, {"int(undefined)", "error"}, {`int(real("NaN"))`, "error"},
		{"real(3)", "3.0"}, {`real("2.5")`, "2.5"}, {`real("INF")`, `real("INF")`}, {"real(undefined)", "error"},
		{"floor(2.7)", "2"}, {"floor(-2.5)", "-3"}, {"ceiling(2.1)", "3"}, {"ceil(-2.1)", "-2"}, {"round(2.5)", "2"},
		{"round(3.5)", "4"}, {"round(7)", "7"}, {`round("2.4")`, "2"}, {"floor(undefined)", "error"},
		{"min({3, 1, 2})", "1"}, {"max({3, 1, 2})", "3"}, {"min({3, 1.5})", "1.5"}, {"max({3, 1.5})", "3.0"},
		{"min({})", "undefined"}, {"min({undefined, 2})", "2"}, {`min({"a"})`, "error"}, {"min(3, 1, 2)", "error"},
		{"max(undefined)", "undefined"}, {"max(3)", "error"},
		{"time()", "1700000000"}, {"CurrentTime", "1700000000"}, {"time(1)", "error"},
		{"debug(1 + 1)", "2"}, {"NoSuchFunction(1)", "error"}, {"IFTHENELSE(true, 1, 2)", "1"},
	}
	var debugged []string
	env := &Env{
		Now:   func() time.Time { return time.Unix(1700000000, 0) },
		Debug: func(e Expr, v Value) { debugged = append(debugged, e.String()+" -> "+v.String()) },
	}
	for _, tc := range tests {
		e, err := Parse(tc.src)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.src, err)
			continue
		}
		if got := env.Eval(e, my, nil).String(); got != tc.want {
			t.Errorf("%s = %s, want %s", tc.src, got, tc.want)
		}
	}
	if fmt.Sprint(debugged) != "[1 + 1 -> 2]" {
		t.Errorf("debug hook saw %v", debugged)
	}
}

// TestEvalLimits checks that pathological ads end in error, not in a stack
// overflow or exponential time.
func TestEvalLimits(t *testing.T) {
	ad := NewAd()
	// A0 = 1, A1 = A0 + A0, ... : 2^60 references without a budget.
	ad.SetValue("A0", IntValue(1))
	for i := 1; i <= 60; i++ {
		ad.Set(fmt.Sprintf("A%d", i), MustParse(fmt.Sprintf("A%d + A%d", i-1, i-1)))
	}
	start := time.Now()
	if v := ad.Eval("A60"); !v.IsError() {
		t.Errorf("A60 = %v, want error once the step budget is spent", v)
	}
	t.Logf("exponential ad gave error after %v", time.Since(start))
	// A chain deeper than the attribute depth limit.
	deep := NewAd()
	deep.SetValue("B0", IntValue(1))
	for i := 1; i <= 500; i++ {
		deep.Set(fmt.Sprintf("B%d", i), MustParse(fmt.Sprintf("B%d", i-1)))
	}
	if v := deep.Eval("B500"); !v.IsError() {
		t.Errorf("B500 = %v, want error past the depth limit", v)
	}
	if v := deep.Eval("B150"); v.String() != "1" {
		t.Errorf("B150 = %v, want 1", v)
	}
}

func TestMatchSemantics(t *testing.T) {
	machine := mustAd(t, `Cpus = 4
Memory = 8192
VMType = "centos7"
Start = (TARGET.VMType =?= MY.VMType) || (TARGET.VMType =?= undefined)
`)
	tests := []struct {
		job  string
		want bool
	}{
		{"Requirements = TARGET.Cpus >= 2\nVMType = \"centos7\"", true},
		{"Requirements = TARGET.Cpus >= 2", true},
		{"Requirements = TARGET.Cpus >= 2\nVMType = \"ubuntu22\"", false},
		{"Requirements = TARGET.NoSuch >= 2", false}, // undefined is no match
		{"Requirements = 1 / 0 == 1", false},         // error is no match
		{"Requirements = 1", true},                   // numbers count as booleans, as in HTCondor
		{"Requirements = \"true\"", false},
		{"VMType = \"centos7\"", false}, // a job without Requirements never matches
	}
	for _, tc := range tests {
		if got := Match(mustAd(t, tc.job), machine); got != tc.want {
			t.Errorf("job %q: Match = %v, want %v", tc.job, got, tc.want)
		}
	}
	// Requirements takes precedence over START on the machine.
	m2 := machine.Clone()
	m2.SetValue("Requirements", BoolValue(false))
	if Match(mustAd(t, "Requirements = true"), m2) {
		t.Error("machine Requirements = false should reject even though START accepts")
	}
	if !Match(mustAd(t, "Requirements = true"), machine) {
		t.Error("Clone changed the original ad")
	}
}
