package classad

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestAdCaseInsensitive(t *testing.T) {
	ad := NewAd()
	ad.SetValue("VMType", StringValue("centos7"))
	ad.SetValue("vmtype", StringValue("ubuntu22")) // replaces, keeps one entry
	ad.Set("Cpus", MustParse("2 * 2"))
	if err := ad.SetExpr("Req", "Cpus >= 4 &&"); err == nil || !strings.Contains(err.Error(), "attribute Req") {
		t.Errorf("SetExpr with bad text: %v", err)
	}
	if ad.Len() != 2 || strings.Join(ad.Names(), ",") != "vmtype,Cpus" {
		t.Errorf("names %v", ad.Names())
	}
	if v := ad.Eval("VMTYPE"); v.String() != `"ubuntu22"` {
		t.Errorf("VMTYPE = %v", v)
	}
	if e, ok := ad.Lookup("CPUS"); !ok || e.String() != "2 * 2" {
		t.Errorf("Lookup(CPUS) = %v, %v", e, ok)
	}
	ad.Delete("CPUS")
	if _, ok := ad.Lookup("cpus"); ok || ad.Len() != 1 {
		t.Errorf("Delete left %v", ad.Names())
	}
	if got := ad.String(); got != "vmtype = \"ubuntu22\"\n" {
		t.Errorf("String() = %q", got)
	}
	var nilAd *Ad
	if _, ok := nilAd.Lookup("x"); ok || nilAd.Len() != 0 || nilAd.Names() != nil || !Eval(MustParse("x"), nilAd, nil).IsUndefined() {
		t.Error("a nil *Ad should act as an empty ad")
	}
}

func TestParseJSON(t *testing.T) {
	tests := []struct {
		name, in string
		ads      int
	}{
		{"condor_q empty stdout", "", 0},
		{"white space only", " \n", 0},
		{"condor_history empty", "[\n]\n", 0},
		{"array", `[{"A": 1},{"A": 2}]`, 2},
		{"jsonl", "{\"A\": 1}\n{\"A\": 2}\n{\"A\": 3}\n", 3},
	}
	for _, tc := range tests {
		ads, err := ParseJSON([]byte(tc.in))
		if err != nil || len(ads) != tc.ads {
			t.Errorf("%s: %d ads, %v; want %d", tc.name, len(ads), err, tc.ads)
		}
	}

	ads, err := ParseJSON([]byte(`[
{
  "Cpus": 4,
  "TotalCpus": 4.0,
  "Big": 12345678901234567890,
  "Exp": 1e3,
  "Name": "slot1@vm",
  "Requirements": "\/Expr(((TARGET.VMType is \"centos7\")) && (TARGET.Memory >= RequestMemory))\/",
  "NotExpr": "/Expr(unclosed",
  "Undef": null,
  "Flag": true,
  "ChildCpus": [1, 1, 2],
  "Mixed": [1, "\/Expr(Cpus * 2)\/"],
  "ToE": {"How": "OF_ITS_OWN_ACCORD", "HowCode": 0},
  "Err": "\/Expr(error)\/"
}
]`))
	if err != nil || len(ads) != 1 {
		t.Fatalf("ParseJSON: %v", err)
	}
	ad := ads[0]
	want := map[string]string{
		"Cpus":         "4",
		"TotalCpus":    "4.0",
		"Big":          "1.2345678901234567E+19",
		"Exp":          "1000.0",
		"Name":         `"slot1@vm"`,
		"Requirements": `((TARGET.VMType =?= "centos7")) && (TARGET.Memory >= RequestMemory)`,
		"NotExpr":      `"/Expr(unclosed"`,
		"Undef":        "undefined",
		"Flag":         "true",
		"ChildCpus":    "{ 1, 1, 2 }",
		"Mixed":        "{ 1, Cpus * 2 }",
		"ToE":          `[ How = "OF_ITS_OWN_ACCORD"; HowCode = 0 ]`,
		"Err":          "error",
	}
	for name, w := range want {
		e, ok := ad.Lookup(name)
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if e.String() != w {
			t.Errorf("%s = %s, want %s", name, e, w)
		}
	}
	if v := ad.Eval("Mixed"); v.String() != "{ 1, 8 }" {
		t.Errorf("Mixed evaluates to %v", v)
	}
	if v := ad.Eval("ToE.HowCode"); !v.IsUndefined() { // no attribute named "ToE.HowCode"
		t.Errorf("ToE.HowCode = %v", v)
	}
	if v := Eval(MustParse("ToE.How"), ad, nil); v.String() != `"OF_ITS_OWN_ACCORD"` {
		t.Errorf("ToE.How = %v", v)
	}
	if i, ok := ad.Eval("Cpus").Int(); !ok || i != 4 {
		t.Errorf("Cpus should stay an integer")
	}
	if _, ok := ad.Eval("TotalCpus").Real(); !ok {
		t.Errorf("TotalCpus should stay a real")
	}
}

func TestParseJSONErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{`[{"A": 1}`, "decode JSON ad list"},
		{`[{"A": 1}] x`, "trailing data"},
		{`[1]`, "decode JSON ad list"},
		{`[null]`, "JSON ad 0: expected an object"},
		{`{"A": 1} {"B":`, "decode JSON ad 1"},
		{`[{"Req": "\/Expr(a &&)\/"}]`, "JSON ad 0: attribute Req: expression"},
		{`[{"L": [1, "\/Expr(()\/"]}]`, "attribute L: list element 1"},
		{`[{"N": {"X": "\/Expr(1 +)\/"}}]`, "attribute N: nested ad: attribute X"},
	}
	for _, tc := range tests {
		_, err := ParseJSON([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseJSON(%s): %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
}

func TestAdUnmarshalJSON(t *testing.T) {
	var ad Ad
	if err := json.Unmarshal([]byte(`{"RequestCpus": 2, "Requirements": "\/Expr(TARGET.Cpus >= RequestCpus)\/"}`), &ad); err != nil {
		t.Fatal(err)
	}
	machine := NewAd()
	machine.SetValue("Cpus", IntValue(2))
	if v := ad.EvalAgainst("Requirements", machine); !v.IsTrue() {
		t.Errorf("Requirements = %v", v)
	}
	if err := json.Unmarshal([]byte(`{"R": "\/Expr(+)\/"}`), &ad); err == nil {
		t.Error("want an error for a bad expression")
	}
	obj := map[string]any{"A": 1, "B": int64(2), "C": 2.5, "D": []any{}, "E": struct{}{}}
	if _, err := AdFromJSON(obj); err == nil || !strings.Contains(err.Error(), "attribute E: unsupported JSON value") {
		t.Errorf("AdFromJSON with a struct: %v", err)
	}
}

func TestParseLong(t *testing.T) {
	in := "# comment\nA = 1\nB = A + 1\n\n\n-- Schedd: x\nA = \"two\"\r\nList = { 1,2 }\n"
	ads, err := ParseLong(strings.NewReader(in))
	if err != nil || len(ads) != 2 {
		t.Fatalf("ParseLong: %d ads, %v", len(ads), err)
	}
	if v := ads[0].Eval("B"); v.String() != "2" {
		t.Errorf("B = %v", v)
	}
	if got := ads[1].String(); got != "A = \"two\"\nList = { 1, 2 }\n" {
		t.Errorf("second ad prints as %q", got)
	}
	again, err := ParseLong(strings.NewReader(ads[1].String()))
	if err != nil || again[0].String() != ads[1].String() {
		t.Errorf("-long round trip: %v", err)
	}
	for _, tc := range []struct{ in, want string }{
		{"A = 1\nnot an attribute\n", "line 2: expected \"Name = expression\""},
		{"A = 1\n9x = 2\n", "line 2"},
		{"A = (1\n", "classad: -long line 1: attribute A: parse error at offset 3: expected ')'"},
		{"A = 1 2\n", "line 1: attribute A"},
	} {
		_, err := ParseLong(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseLong(%q): %v, want %q", tc.in, err, tc.want)
		}
	}
	defer func(n int) { maxLongLine = n }(maxLongLine)
	maxLongLine = 1024
	if _, err := ParseLong(strings.NewReader("A = \"" + strings.Repeat("x", maxLongLine) + "\"\n")); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("line over the limit: %v", err)
	}
}
