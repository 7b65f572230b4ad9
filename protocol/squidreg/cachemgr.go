package squidreg

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// CountersPath is the cache manager page with squid's cumulative counters.
// It is read with a plain (origin-form) GET to the squid's own port; squid
// answers it itself when its http_access rules allow the asking host the
// "manager" ACL.
const CountersPath = "/squid-internal-mgr/counters"

// KBytesOutCounter is the counter whose rate is a squid's load: kilobytes
// sent to clients (shoal measured the same thing on the network interface).
const KBytesOutCounter = "client_http.kbytes_out"

// maxCountersSize bounds a counters page (squid 5's is about 3 KB).
const maxCountersSize = 256 << 10

// ParseCounters reads a cache manager "key = value" page (counters, 5min,
// 60min). Values keep their leading number ("1.5/sec" gives 1.5); lines
// that are not key = number are skipped. It fails when no counter at all
// is found, which is what an HTML error page or a login form looks like.
func ParseCounters(b []byte) (map[string]float64, error) {
	if len(b) > maxCountersSize {
		return nil, fmt.Errorf("cache manager page is %d bytes, limit %d", len(b), maxCountersSize)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxCountersSize)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		key = strings.TrimSpace(key)
		if key == "" || strings.ContainsAny(key, " \t<>\"") {
			continue
		}
		val = strings.TrimSpace(val)
		end := 0
		for end < len(val) && strings.IndexByte("0123456789.+-eE", val[end]) >= 0 {
			end++
		}
		f, err := strconv.ParseFloat(val[:end], 64)
		if err != nil || !finite(f) {
			continue
		}
		out[key] = f
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read cache manager page: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("cache manager page has no counters (starts %q)", truncate(string(b), 60))
	}
	return out, nil
}

// RateMeter turns the cumulative kbytes_out counter into a rate between
// two reads. The zero value is ready to use.
type RateMeter struct {
	kb float64
	at time.Time
}

// Next records a reading and returns the rate since the previous one; ok
// is false on the first reading and after squid restarted (the counter went
// down).
func (m *RateMeter) Next(kb float64, at time.Time) (rate float64, ok bool) {
	prev := *m
	if !prev.at.IsZero() && kb >= prev.kb && at.Sub(prev.at) < 100*time.Millisecond {
		return 0, false // too close to the previous reading: keep it as the base
	}
	*m = RateMeter{kb: kb, at: at}
	if prev.at.IsZero() || kb < prev.kb {
		return 0, false
	}
	return (kb - prev.kb) / at.Sub(prev.at).Seconds(), true
}

// LoadMeter measures a squid's load (KB/s sent to clients) by reading its
// cache manager counters twice. The agent's squid mode uses it to advertise
// the load of the squid next to it.
type LoadMeter struct {
	// URL is the squid's base URL, e.g. http://127.0.0.1:3128.
	URL    string
	Client *http.Client
	m      RateMeter
	last   float64
}

// Load reads the counters and returns the load since the previous call.
// The first call returns 0 (there is no rate yet).
func (l *LoadMeter) Load(ctx context.Context) (float64, error) {
	c := l.Client
	if c == nil {
		c = &http.Client{Timeout: 5 * time.Second}
	}
	kb, err := ReadKBytesOut(ctx, c, strings.TrimSuffix(l.URL, "/"))
	if err != nil {
		return l.last, err
	}
	if rate, ok := l.m.Next(kb, time.Now()); ok {
		l.last = rate
	}
	return l.last, nil
}

// ReadKBytesOut fetches base+CountersPath (base is the squid's own URL,
// e.g. http://127.0.0.1:3128) and returns client_http.kbytes_out.
func ReadKBytesOut(ctx context.Context, c *http.Client, base string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+CountersPath, nil)
	if err != nil {
		return 0, fmt.Errorf("cache manager %s: %w", base, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("cache manager %s: %w", base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxCountersSize+1))
	if err != nil {
		return 0, fmt.Errorf("cache manager %s: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("cache manager %s: %s", base, resp.Status)
	}
	counters, err := ParseCounters(b)
	if err != nil {
		return 0, fmt.Errorf("cache manager %s: %w", base, err)
	}
	kb, ok := counters[KBytesOutCounter]
	if !ok || kb < 0 || kb > math.MaxInt64 {
		return 0, fmt.Errorf("cache manager %s: no usable %s counter", base, KBytesOutCounter)
	}
	return kb, nil
}
