package squidreg_test

import (
	"math"
	"testing"

	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// FuzzParseCounters: no cache manager page panics; values are finite.
func FuzzParseCounters(f *testing.F) {
	f.Add([]byte("sample_time = 1795361072.100892 (Sun, 22 Nov 2026 15:24:32 GMT)\nclient_http.kbytes_out = 19\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := squidreg.ParseCounters(b)
		if err != nil {
			return
		}
		if len(m) == 0 {
			t.Fatal("no counters and no error")
		}
		for k, v := range m {
			if math.IsNaN(v) || math.IsInf(v, 0) || k == "" {
				t.Fatalf("%q = %v", k, v)
			}
		}
	})
}
