package openstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/protocol"
)

// TestBootErrorClasses replays the cloud's error answers to a boot and
// checks the class, status, Retry-After and how often the POST was sent.
func TestBootErrorClasses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		handler   func(n int) http.HandlerFunc // n: 1-based call number
		class     protocol.ErrorClass
		status    int
		retry     time.Duration
		posts     int
		msgSubstr string
	}{
		{
			name: "quota exceeded 403",
			handler: func(int) http.HandlerFunc {
				return novaError(403, "forbidden", "Quota exceeded for cores: Requested 8, but already used 0 of 4 cores")
			},
			class: protocol.ErrClassQuota, status: 403, posts: 1, msgSubstr: "Quota exceeded for cores",
		},
		{
			name: "policy forbidden 403",
			handler: func(int) http.HandlerFunc {
				return novaError(403, "forbidden", "Policy doesn't allow os_compute_api:servers:create to be performed.")
			},
			class: protocol.ErrClassAuth, status: 403, posts: 1,
		},
		{
			name: "rate limited, Retry-After beyond the wait cap",
			handler: func(int) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Retry-After", "120")
					novaError(429, "overLimit", "Rate limit exceeded")(w, r)
				}
			},
			class: protocol.ErrClassRateLimit, status: 429, retry: 120 * time.Second, posts: 1, msgSubstr: "Rate limit",
		},
		{
			name: "rate limited, then accepted",
			handler: func(n int) http.HandlerFunc {
				if n == 1 {
					return func(w http.ResponseWriter, r *http.Request) {
						w.Header().Set("Retry-After", "0")
						novaError(429, "overLimit", "slow down")(w, r)
					}
				}
				return nil
			},
			class: protocol.ErrClassNone, posts: 2,
		},
		{
			name: "rate limited every time",
			handler: func(int) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Retry-After", "0")
					novaError(429, "overLimit", "slow down")(w, r)
				}
			},
			class: protocol.ErrClassRateLimit, status: 429, posts: 1 + DefaultMaxRetries,
		},
		{
			name:    "server error is not repeated for a POST",
			handler: func(int) http.HandlerFunc { return novaError(500, "computeFault", "Unexpected API Error.") },
			class:   protocol.ErrClassTransient, status: 500, posts: 1, msgSubstr: "Unexpected API Error",
		},
		{
			name:    "bad request",
			handler: func(int) http.HandlerFunc { return novaError(400, "badRequest", "Invalid key_name provided.") },
			class:   protocol.ErrClassInvalid, status: 400, posts: 1, msgSubstr: "Invalid key_name",
		},
		{
			name: "glance-style plain text 503",
			handler: func(int) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					http.Error(w, "503 Service Unavailable\n\nThe server is busy", http.StatusServiceUnavailable)
				}
			},
			class: protocol.ErrClassTransient, status: 503, posts: 1, msgSubstr: "The server is busy",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeCloud(t)
			var n atomic.Int32
			f.on("POST /compute/v2.1/servers", func(w http.ResponseWriter, r *http.Request) {
				if h := tc.handler(int(n.Add(1))); h != nil {
					h(w, r)
					return
				}
				writeJSON(w, 202, map[string]any{"server": map[string]any{"id": "srv-ok", "links": []any{}}})
			})
			d, err := New(context.Background(), f.config(), nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = d.Boot(context.Background(), driver.BootSpec{Name: "w-1", Flavor: "m1.tiny", Image: "00000000-0000-0000-0000-0000000000aa"})
			if got := Classify(err); got != tc.class {
				t.Fatalf("class = %q, want %q (err %v)", got, tc.class, err)
			}
			if got := f.count("POST /compute/v2.1/servers"); got != tc.posts {
				t.Errorf("POSTs = %d, want %d", got, tc.posts)
			}
			if err == nil {
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error", err)
			}
			var classed interface{ ErrorClass() protocol.ErrorClass }
			if !errors.As(err, &classed) || classed.ErrorClass() != tc.class {
				t.Errorf("ErrorClass() does not give %q", tc.class)
			}
			if e.StatusCode != tc.status || e.RetryAfter != tc.retry {
				t.Errorf("status %d retry %s, want %d %s", e.StatusCode, e.RetryAfter, tc.status, tc.retry)
			}
			if ra, ok := RetryAfter(err); ok != (tc.retry > 0) || ra != tc.retry {
				t.Errorf("RetryAfter = %s %v, want %s", ra, ok, tc.retry)
			}
			if !strings.Contains(err.Error(), tc.msgSubstr) || !strings.Contains(err.Error(), `boot server "w-1"`) {
				t.Errorf("message %q lacks %q or the operation", err.Error(), tc.msgSubstr)
			}
		})
	}
}

// TestListRetries checks that idempotent GETs are repeated after 5xx (with
// Retry-After honoured) and give up after MaxRetries.
func TestListRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		failures int
		status   int
		class    protocol.ErrorClass
		calls    int
	}{
		{"two 500s then success", 2, 500, protocol.ErrClassNone, 3},
		{"503 with Retry-After then success", 1, 503, protocol.ErrClassNone, 2},
		{"502 forever", 100, 502, protocol.ErrClassTransient, 1 + DefaultMaxRetries},
		{"404 is not retried", 100, 404, protocol.ErrClassInvalid, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeCloud(t)
			var n atomic.Int32
			f.on("GET /compute/v2.1/servers/detail", func(w http.ResponseWriter, r *http.Request) {
				if int(n.Add(1)) <= tc.failures {
					w.Header().Set("Retry-After", "0")
					novaError(tc.status, "computeFault", "boom")(w, r)
					return
				}
				writeJSON(w, 200, map[string]any{"servers": []any{}})
			})
			d, err := New(context.Background(), f.config(), nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = d.Servers(context.Background())
			if got := Classify(err); got != tc.class {
				t.Errorf("class %q, want %q (%v)", got, tc.class, err)
			}
			if got := f.count("GET /compute/v2.1/servers/detail"); got != tc.calls {
				t.Errorf("calls = %d, want %d", got, tc.calls)
			}
		})
	}
}

func TestTimeoutIsTransient(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	f.on("GET /compute/v2.1/limits", func(w http.ResponseWriter, r *http.Request) {
		select { // never answers in time
		case <-r.Context().Done():
		case <-done:
		}
	})
	cfg := f.config()
	cfg.RequestTimeout = 300 * time.Millisecond
	d, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Limits(context.Background())
	if Classify(err) != protocol.ErrClassTransient {
		t.Fatalf("class %q, want transient: %v", Classify(err), err)
	}
	if !strings.Contains(err.Error(), "get limits") {
		t.Errorf("message lacks the operation: %v", err)
	}
}

func TestConnectionRefusedIsTransient(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := Config{AuthURL: "http://" + addr + "/v3", Username: "u", Password: "p", ProjectName: "x",
		RequestTimeout: 2 * time.Second, MaxRetryWait: 10 * time.Millisecond}
	_, err = New(context.Background(), cfg, nil)
	if Classify(err) != protocol.ErrClassTransient {
		t.Fatalf("class %q, want transient: %v", Classify(err), err)
	}
}

func TestWrongPasswordIsAuthAndRedacted(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	cfg := f.config()
	cfg.Password = Secret("not-the-Right-one-42")
	_, err := New(context.Background(), cfg, nil)
	if Classify(err) != protocol.ErrClassAuth {
		t.Fatalf("class %q, want auth: %v", Classify(err), err)
	}
	for _, s := range []string{err.Error(), fmt.Sprintf("%v %+v %#v %s", err, err, err, err)} {
		if strings.Contains(s, "not-the-Right-one-42") {
			t.Fatalf("the password leaked into the error: %s", s)
		}
	}
	if !strings.Contains(err.Error(), "authenticate") || !strings.Contains(err.Error(), "HTTP 401") {
		t.Errorf("error not clear: %v", err)
	}
}

// TestExpiredTokenReauth checks that a 401 on a call makes the driver log
// in again once, and that a failed re-login is an auth error.
func TestExpiredTokenReauth(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	d, err := New(context.Background(), f.config(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var first atomic.Bool
	first.Store(true)
	f.on("GET /compute/v2.1/limits", func(w http.ResponseWriter, r *http.Request) {
		if first.Swap(false) {
			writeJSON(w, 401, map[string]any{"error": map[string]any{"code": 401, "message": "The request you have made requires authentication."}})
			return
		}
		writeJSON(w, 200, map[string]any{"limits": map[string]any{"absolute": map[string]any{"maxTotalCores": 4}}})
	})
	l, err := d.Limits(context.Background())
	if err != nil || l.MaxCores != 4 {
		t.Fatalf("Limits after token expiry = %+v, %v", l, err)
	}
	if got := f.count("POST /v3/auth/tokens"); got != 2 {
		t.Errorf("token requests = %d, want 2 (login, re-login)", got)
	}

	// The password was changed: the re-login fails.
	f.mu.Lock()
	f.password = "rotated"
	f.mu.Unlock()
	f.on("GET /compute/v2.1/limits", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 401, map[string]any{"error": map[string]any{"code": 401, "message": "The request you have made requires authentication."}})
	})
	_, err = d.Limits(context.Background())
	if Classify(err) != protocol.ErrClassAuth {
		t.Fatalf("class %q, want auth: %v", Classify(err), err)
	}
	if strings.Contains(err.Error(), "s3cret-pa55") {
		t.Errorf("password leaked: %v", err)
	}
}

func TestClassifyGophercloudErrors(t *testing.T) {
	t.Parallel()
	code := func(status int, body string) error {
		return gophercloud.ErrUnexpectedResponseCode{Actual: status, Body: []byte(body), ResponseHeader: http.Header{}}
	}
	tests := []struct {
		name string
		err  error
		want protocol.ErrorClass
	}{
		{"nil", nil, protocol.ErrClassNone},
		{"401", code(401, `{"error": {"code": 401}}`), protocol.ErrClassAuth},
		{"403 quota", code(403, `{"forbidden": {"message": "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances"}}`), protocol.ErrClassQuota},
		{"413 quota (old nova)", code(413, `{"overLimit": {"message": "Quota exceeded for ram"}}`), protocol.ErrClassQuota},
		{"413 rate", code(413, `{"overLimit": {"message": "This request was rate-limited."}}`), protocol.ErrClassRateLimit},
		{"429", code(429, ``), protocol.ErrClassRateLimit},
		{"409", code(409, `{"conflictingRequest": {"message": "Cannot 'delete' instance while it is in task_state deleting"}}`), protocol.ErrClassTransient},
		{"500 wrapped", fmt.Errorf("list: %w", code(500, ``)), protocol.ErrClassTransient},
		{"pointer 504", &gophercloud.ErrUnexpectedResponseCode{Actual: 504, ResponseHeader: http.Header{}}, protocol.ErrClassTransient},
		{"422", code(422, ``), protocol.ErrClassInvalid},
		{"unable to reauthenticate", &gophercloud.ErrUnableToReauthenticate{ErrOriginal: code(401, ``), ErrReauth: code(401, ``)}, protocol.ErrClassAuth},
		{"reauth then 403 quota", &gophercloud.ErrErrorAfterReauthentication{ErrOriginal: code(403, `{"forbidden": {"message": "Quota exceeded"}}`)}, protocol.ErrClassQuota},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), protocol.ErrClassTransient},
		{"endpoint not found", &gophercloud.ErrEndpointNotFound{}, protocol.ErrClassInvalid},
		{"not found by name", fmt.Errorf("flavor %q: %w", "x", errNotFound), protocol.ErrClassInvalid},
		{"typed", &Error{Class: protocol.ErrClassNoHost}, protocol.ErrClassNoHost},
		{"unknown", errors.New("strange"), protocol.ErrClassInternal},
	}
	for _, tc := range tests {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("%s: Classify = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestFaultClass(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fault string
		want  protocol.ErrorClass
	}{
		{"No valid host was found. ", protocol.ErrClassNoHost},
		{"No valid host was found. There are not enough hosts available.", protocol.ErrClassNoHost},
		{"Exceeded maximum number of retries. Exhausted all hosts available for retrying build failures for instance x.", protocol.ErrClassNoHost},
		{"Quota exceeded for cores", protocol.ErrClassQuota},
		{"Build of instance x aborted: Failed to allocate the network(s), not rescheduling.", protocol.ErrClassTransient},
		{"", protocol.ErrClassTransient},
	}
	for _, tc := range tests {
		if got := FaultClass(tc.fault); got != tc.want {
			t.Errorf("FaultClass(%q) = %q, want %q", tc.fault, got, tc.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 22, 15, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{" 7 ", 7 * time.Second, true},
		{"99999999999999999999", 0, false},
		{"9999999", maxRetryAfter, true},
		{"-3", 0, false},
		{"1.5", 0, false},
		{"Sun, 22 Nov 2026 15:00:30 GMT", 30 * time.Second, true},
		{"Sun, 22 Nov 2026 14:00:00 GMT", 0, true},
		{"Sun, 22 Nov 2036 14:00:00 GMT", maxRetryAfter, true},
		{"soon", 0, false},
	}
	for _, tc := range tests {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %s %v, want %s %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestAPIMessage(t *testing.T) {
	t.Parallel()
	tests := []struct{ body, want string }{
		{`{"forbidden": {"code": 403, "message": "Quota exceeded for instances"}}`, "Quota exceeded for instances"},
		{`{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}`, "The request you have made requires authentication."},
		{`{"NeutronError": {"type": "NetworkNotFound", "message": "Network x could not be found.", "detail": ""}}`, "Network x could not be found."},
		{`{"message": "top level"}`, "top level"},
		{`{"title": "Conflict", "description": "Image already active"}`, "Image already active"},
		{"<html><body><h1>503 Service Unavailable</h1>\n No server is available</body></html>", "<html><body><h1>503 Service Unavailable</h1> No server is available</body></html>"},
		{"", "no message"},
		{`[1,2]`, "[1,2]"},
		{strings.Repeat("x", 1000), strings.Repeat("x", maxMessage) + "…"},
	}
	for _, tc := range tests {
		if got := apiMessage([]byte(tc.body)); got != tc.want {
			t.Errorf("apiMessage(%q) = %q, want %q", tc.body, got, tc.want)
		}
	}
}
