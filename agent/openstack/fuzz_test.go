package openstack

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", "Sun, 22 Nov 2026 15:00:30 GMT", "-1", "", "1e9"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 22, 15, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := parseRetryAfter(v, now)
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %s, outside [0, %s]", v, d, maxRetryAfter)
		}
		if !ok && d != 0 {
			t.Fatalf("parseRetryAfter(%q) = %s but not ok", v, d)
		}
	})
}

func FuzzAPIMessage(f *testing.F) {
	for _, s := range []string{
		`{"forbidden": {"code": 403, "message": "Quota exceeded for cores"}}`,
		`{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}`,
		`{"NeutronError": {"message": "x"}}`, "503 Service Unavailable", `{"a": 1}`, `{"m": {"message": 5}}`, "\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m := apiMessage(body)
		if m == "" || !utf8.ValidString(m) || len(m) > maxMessage+len("…") {
			t.Fatalf("apiMessage(%q) = %q", body, m)
		}
		if strings.ContainsAny(m, "\n\t") {
			t.Fatalf("apiMessage(%q) = %q keeps line breaks", body, m)
		}
	})
}

func FuzzContentMD5(f *testing.F) {
	for _, s := range []string{"9dd4e461268c8034f5c8564e155c67a6", "nWRhYSaMgDT1yFZOFVxnpg==", "", "zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		h := contentMD5(v)
		if h != "" && (len(h) != 32 || strings.ToLower(h) != h) {
			t.Fatalf("contentMD5(%q) = %q, want 32 lowercase hex digits or nothing", v, h)
		}
	})
}

func FuzzParseKeystoneTime(f *testing.F) {
	for _, s := range []string{"2026-11-25T15:00:00.000000", "2026-11-25T15:00:00Z", "2026-11-25T15:00:00", "never"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		tm, err := parseKeystoneTime(v)
		if err == nil && tm.Location() != time.UTC {
			t.Fatalf("parseKeystoneTime(%q) not in UTC", v)
		}
		if err != nil && !strings.Contains(err.Error(), "keystone time") {
			t.Fatalf("unclear error %v", err)
		}
	})
}
