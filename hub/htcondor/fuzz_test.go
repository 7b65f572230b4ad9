package htcondor

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// decodeStream reads data with the stream decoder into one map per ad
// (attribute name -> raw value, copied; a later duplicate wins, as in
// encoding/json).
func decodeStream(data []byte) ([]map[string]json.RawMessage, error) {
	st := newAdStream(bytes.NewReader(data), 1<<20)
	var out []map[string]json.RawMessage
	for {
		attrs, err := st.next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		m := map[string]json.RawMessage{}
		for _, a := range attrs {
			if !json.Valid(a.val) {
				return out, errors.New("stream handed out an invalid value " + string(a.val))
			}
			m[string(a.name)] = append(json.RawMessage(nil), a.val...)
		}
		out = append(out, m)
	}
}

// decodeReference reads data as encoding/json would, under the same rules:
// nothing at all is no ad, "[...]" an array of objects, "{...} {...}" a
// sequence of objects.
func decodeReference(data []byte) ([]map[string]json.RawMessage, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, nil
	}
	if trimmed[0] == '[' {
		var raw []json.RawMessage
		if err := json.Unmarshal(data, &raw); err != nil {
			return nil, err
		}
		var out []map[string]json.RawMessage
		for _, r := range raw {
			if !bytes.HasPrefix(bytes.TrimLeft(r, " \t\r\n"), []byte("{")) {
				return nil, errors.New("not an object")
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(r, &m); err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	}
	if trimmed[0] != '{' {
		return nil, errors.New("not an array or an object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var out []map[string]json.RawMessage
	for {
		var r json.RawMessage
		err := dec.Decode(&r)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if !bytes.HasPrefix(r, []byte("{")) {
			return nil, errors.New("not an object")
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(r, &m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
}

// FuzzAdStream checks the stream decoder against encoding/json: it must
// accept exactly the well-formed streams of JSON ads (save that it refuses
// values nested past its bound, empty attribute names and names that are
// not valid UTF-8, which no ClassAd has), hand out the same attributes and
// values, and never panic.
func FuzzAdStream(f *testing.F) {
	for _, name := range []string{"00_condor_q-json_EMPTY-QUEUE.out", "00_condor_history-json_EMPTY.out",
		"11_condor_q-json_projection.out", "22_condor_status-json_projection.out", "31_condor_history-jsonl.out",
		"70_condor_q-totals-json.out"} {
		b, err := os.ReadFile(filepath.Join("testdata/recorded", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{`[]`, `[{}]`, `{"a":1}{"b":[1,{"c":null}]}`, `[{"A":"\/Expr(x)\/","B":-1.5e3}]`,
		`[{"A":1},]`, `[{"A":"\ud83d"}]`, ` [ { "a" : true , "b" : false } ] `, `[{"a":1}`, "[{\"a\":\"\xff\"}]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeStream(data)
		want, refErr := decodeReference(data)
		switch {
		case err != nil && refErr == nil:
			if strings.Contains(err.Error(), "nested deeper") || strings.Contains(err.Error(), "empty attribute name") ||
				strings.Contains(err.Error(), "is not valid UTF-8") {
				return
			}
			t.Fatalf("stream refused what encoding/json accepts: %v", err)
		case err == nil && refErr != nil:
			t.Fatalf("stream accepted what encoding/json refuses (%v)", refErr)
		case err != nil:
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v is not a *DecodeError", err)
			}
			return
		}
		if len(got) != len(want) {
			t.Fatalf("stream found %d ads, encoding/json %d", len(got), len(want))
		}
		for i := range got {
			if len(got[i]) != len(want[i]) {
				t.Fatalf("ad %d: %d attributes, encoding/json %d", i, len(got[i]), len(want[i]))
			}
			for k, w := range want[i] {
				gv, err := decodeValue(got[i][k])
				if err != nil {
					t.Fatalf("ad %d %q: %v", i, k, err)
				}
				wv, err := decodeValue(w)
				if err != nil {
					t.Fatalf("ad %d %q: %v", i, k, err)
				}
				if !reflect.DeepEqual(gv, wv) {
					t.Fatalf("ad %d %q: stream %s, encoding/json %s", i, k, got[i][k], w)
				}
			}
		}
	})
}

// decodeValue decodes one JSON value, keeping numbers as text.
func decodeValue(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// FuzzQueue feeds arbitrary output through the whole condor_q path (stream,
// ClassAd conversion, expression parsing, shapes): it must never panic, and
// every failure must be a *DecodeError.
func FuzzQueue(f *testing.F) {
	for _, name := range []string{"10_condor_q-json_all-states.out", "11_condor_q-json_projection.out", "32_condor_q-json_after_rm.out"} {
		b, err := os.ReadFile(filepath.Join("testdata/recorded", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`[{"JobStatus":1,"RequestMemory":"\/Expr(1 + )\/"}]`))
	f.Add([]byte(`[{"JobStatus":1,"Owner":"x","RequestMemory":"\/Expr(A)\/","A":"\/Expr(A + 1)\/","RequestDisk":1}]`))
	s := testSource(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		q := s.newQueue()
		err := q.read(bytes.NewReader(data))
		var de *DecodeError
		if err != nil && !errors.As(err, &de) {
			t.Fatalf("error %v is not a *DecodeError", err)
		}
		if err == nil && q.idle+q.running+q.ignored != q.jobs {
			t.Fatalf("counted %d+%d+%d of %d jobs", q.idle, q.running, q.ignored, q.jobs)
		}
	})
}

// FuzzGroups feeds arbitrary output through the grouped-idle-jobs path
// (condor_q -group-by rows into shapes): it must never panic, every
// failure must be a *DecodeError, and the counts must add up.
func FuzzGroups(f *testing.F) {
	for _, name := range []string{"80_live_condor_q-group-by.out", "81_live_condor_q-group-by_no-negotiation-yet.out", "80_live_condor_q-json_jobs.out"} {
		b, err := os.ReadFile(filepath.Join("testdata/recorded", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`[{"JobCount":-1}]`))
	f.Add([]byte(`[{"JobCount":3,"JobStatus":1,"JobIds":"1.0 ... 1.2","CanopyGroup":"a","RequestMemory":1,"RequestDisk":1}]`))
	s := testSource(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		q := s.newQueue()
		err := q.readGroups(bytes.NewReader(data))
		var de *DecodeError
		if err != nil && !errors.As(err, &de) {
			t.Fatalf("error %v is not a *DecodeError", err)
		}
		if err == nil && (q.idle+q.running+q.ignored != q.jobs || q.idle < 0 || q.running < 0) {
			t.Fatalf("counted %d idle, %d running, %d ignored of %d jobs", q.idle, q.running, q.ignored, q.jobs)
		}
	})
}
