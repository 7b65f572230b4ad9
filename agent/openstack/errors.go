package openstack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/canopy-grid/canopy/protocol"
)

// Error is a failed cloud operation with its class, as the agent reports it
// to the hub. Its message never holds a credential.
type Error struct {
	// Op is what was attempted, e.g. `boot server "w-1"`.
	Op string
	// Class is what kind of failure this is.
	Class protocol.ErrorClass
	// StatusCode is the HTTP status the cloud answered, 0 if none.
	StatusCode int
	// RetryAfter is how long the cloud asked to wait before retrying, 0 if
	// it did not say.
	RetryAfter time.Duration
	// Msg describes the cause (the cloud's message when it gave one).
	Msg string
	err error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("openstack: %s: %s", e.Op, e.Msg)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

// ErrorClass returns e's class, so that callers can classify errors from
// any driver through an interface instead of this package's Classify.
func (e *Error) ErrorClass() protocol.ErrorClass { return e.Class }

// Unwrap returns the underlying error, for errors.Is (e.g. context.DeadlineExceeded).
func (e *Error) Unwrap() error { return e.err }

// Classify returns the class of an error from this package or from
// gophercloud: auth, quota, rate_limited, transient, invalid, or internal
// for anything unrecognised. Nil is ErrClassNone.
func Classify(err error) protocol.ErrorClass {
	if err == nil {
		return protocol.ErrClassNone
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	c, _, _, _ := classify(err)
	return c
}

// RetryAfter returns how long the cloud asked to wait before retrying, if
// err carries a Retry-After.
func RetryAfter(err error) (time.Duration, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter, e.RetryAfter > 0
	}
	if r, ok := unexpectedCode(err); ok {
		d, ok := parseRetryAfter(r.ResponseHeader.Get("Retry-After"), time.Now())
		return d, ok && d > 0
	}
	return 0, false
}

// FaultClass classifies the fault message of a server in ERROR: "No valid
// host was found" (and exhausted build retries) is no_valid_host, a quota
// fault is quota, anything else transient.
func FaultClass(fault string) protocol.ErrorClass {
	f := strings.ToLower(fault)
	switch {
	case strings.Contains(f, "no valid host"), strings.Contains(f, "exhausted all hosts"):
		return protocol.ErrClassNoHost
	case strings.Contains(f, "quota exceeded"), strings.Contains(f, "over quota"):
		return protocol.ErrClassQuota
	}
	return protocol.ErrClassTransient
}

// wrapError turns err from operation op into an *Error with its class and
// a message scrubbed of secrets. It returns nil for nil and passes an
// *Error through, prefixing op.
func wrapError(op string, err error, secrets []string) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return &Error{Op: op, Class: e.Class, StatusCode: e.StatusCode, RetryAfter: e.RetryAfter,
			Msg: redact(e.Op+": "+e.Msg, secrets), err: e.err}
	}
	class, status, retry, msg := classify(err)
	return &Error{Op: op, Class: class, StatusCode: status, RetryAfter: retry, Msg: redact(msg, secrets), err: err}
}

// authFailure reclassifies a failed login: Keystone answers 404 when the
// application credential, user or project it names no longer exists (a
// revoked or purged credential), which is a credential problem, not an
// invalid request.
func authFailure(err error) error {
	var e *Error
	if errors.As(err, &e) && e.StatusCode == http.StatusNotFound {
		e.Class = protocol.ErrClassAuth
	}
	return err
}

// classify finds err's class, HTTP status, Retry-After and a short message.
func classify(err error) (protocol.ErrorClass, int, time.Duration, string) {
	var reauth *gophercloud.ErrUnableToReauthenticate
	if errors.As(err, &reauth) && reauth != nil {
		c, status, retry, msg := classify(reauth.ErrReauth)
		return c, status, retry, "re-authentication failed: " + msg
	}
	if r, ok := unexpectedCode(err); ok {
		msg := apiMessage(r.Body)
		retry, _ := parseRetryAfter(r.ResponseHeader.Get("Retry-After"), time.Now())
		return statusClass(r.Actual, msg), r.Actual, retry, fmt.Sprintf("%s (HTTP %d)", msg, r.Actual)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return protocol.ErrClassTransient, 0, 0, "timed out: " + err.Error()
	case errors.Is(err, context.Canceled):
		return protocol.ErrClassTransient, 0, 0, "canceled: " + err.Error()
	case errors.Is(err, errNotFound):
		return protocol.ErrClassInvalid, 0, 0, err.Error()
	}
	if tlsError(err) {
		return protocol.ErrClassInvalid, 0, 0, "TLS: " + err.Error() + " (check ca_cert_file)"
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return protocol.ErrClassTransient, 0, 0, err.Error()
	}
	var timeout gophercloud.ErrTimeOut
	if errors.As(err, &timeout) {
		return protocol.ErrClassTransient, 0, 0, err.Error()
	}
	var (
		svc     *gophercloud.ErrServiceNotFound
		svcV    gophercloud.ErrServiceNotFound
		ep      *gophercloud.ErrEndpointNotFound
		epV     gophercloud.ErrEndpointNotFound
		missing gophercloud.ErrMissingInput
		invalid gophercloud.ErrInvalidInput
		mPtr    *gophercloud.ErrMissingInput
		iPtr    *gophercloud.ErrInvalidInput
	)
	if errors.As(err, &svc) || errors.As(err, &svcV) || errors.As(err, &ep) || errors.As(err, &epV) ||
		errors.As(err, &missing) || errors.As(err, &invalid) || errors.As(err, &mPtr) || errors.As(err, &iPtr) {
		return protocol.ErrClassInvalid, 0, 0, err.Error()
	}
	return protocol.ErrClassInternal, 0, 0, err.Error()
}

// tlsError reports whether err is a certificate verification failure: a
// configuration problem that retrying does not fix.
func tlsError(err error) bool {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
	)
	return errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verify)
}

// statusClass maps an HTTP status and the API's message to a class.
func statusClass(status int, msg string) protocol.ErrorClass {
	quota := strings.Contains(strings.ToLower(msg), "quota")
	switch {
	case status == http.StatusUnauthorized:
		return protocol.ErrClassAuth
	case status == http.StatusForbidden && quota:
		return protocol.ErrClassQuota
	case status == http.StatusForbidden:
		return protocol.ErrClassAuth
	case status == http.StatusRequestEntityTooLarge && quota:
		return protocol.ErrClassQuota // Nova before 2.1 said 413 for quota
	case status == http.StatusRequestEntityTooLarge, status == http.StatusTooManyRequests, status == 498:
		return protocol.ErrClassRateLimit
	case status == http.StatusConflict, status == http.StatusRequestTimeout:
		return protocol.ErrClassTransient // e.g. "instance is in task_state deleting"
	case status == http.StatusNotImplemented:
		return protocol.ErrClassInvalid
	case status >= 500:
		return protocol.ErrClassTransient
	case status >= 400:
		return protocol.ErrClassInvalid
	}
	return protocol.ErrClassInternal
}

// unexpectedCode finds gophercloud's HTTP status error in err's chain
// (gophercloud returns it both as a value and as a pointer).
func unexpectedCode(err error) (gophercloud.ErrUnexpectedResponseCode, bool) {
	var v gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &v) {
		return v, true
	}
	var p *gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &p) && p != nil {
		return *p, true
	}
	return v, false
}

// maxRetryAfter bounds a Retry-After the driver accepts.
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP date
// (relative to now). It reports false for an absent or malformed value.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, false
		}
		if n > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	switch {
	case d < 0:
		return 0, true
	case d > maxRetryAfter:
		return maxRetryAfter, true
	}
	return d.Round(time.Second), true
}

// maxMessage bounds the API message kept in an error.
const maxMessage = 400

// apiMessage extracts the human message from an OpenStack error body:
// Nova's {"forbidden": {"message": ...}}, Keystone's {"error": {"message":
// ...}}, Neutron's {"NeutronError": {"message": ...}}, a bare {"message":
// ...} or {"title": ..., "description": ...}, or else the body as text.
func apiMessage(body []byte) string {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) == nil && len(top) > 0 {
		if m := messageIn(top); m != "" {
			return clip(m)
		}
		for _, raw := range top {
			var inner map[string]json.RawMessage
			if json.Unmarshal(raw, &inner) == nil {
				if m := messageIn(inner); m != "" {
					return clip(m)
				}
			}
		}
	}
	s := strings.TrimSpace(string(body))
	if s == "" {
		return "no message"
	}
	return clip(s)
}

func messageIn(m map[string]json.RawMessage) string {
	for _, k := range []string{"message", "description", "detail", "title"} {
		raw, ok := m[k]
		if !ok {
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) == nil && strings.TrimSpace(s) != "" {
			return s
		}
	}
	return ""
}

// clip collapses whitespace and bounds s to maxMessage bytes of valid UTF-8.
func clip(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	if len(s) <= maxMessage {
		return s
	}
	cut := maxMessage
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// redact replaces every secret in s.
func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, redacted)
		}
	}
	return s
}

// errNotFound marks a named resource (flavor, image, network) that the
// cloud does not have.
var errNotFound = errors.New("not found")
