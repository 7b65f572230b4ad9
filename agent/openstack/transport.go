package openstack

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/sirupsen/logrus"
)

// limitTransport bounds the requests in flight to one cloud. A slot is held
// from sending a request until its response headers arrive (or it fails);
// reading a streamed body does not hold one.
type limitTransport struct {
	slots chan struct{}
	next  http.RoundTripper
}

func newLimitTransport(n int, next http.RoundTripper) *limitTransport {
	return &limitTransport{slots: make(chan struct{}, n), next: next}
}

// RoundTrip implements http.RoundTripper.
func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	select {
	case t.slots <- struct{}{}:
	case <-req.Context().Done():
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, req.Context().Err()
	}
	defer func() { <-t.slots }()
	return t.next.RoundTrip(req)
}

// noRetryKey marks a context whose requests must not be repeated (a
// streamed upload whose body cannot be sent twice).
type noRetryKey struct{}

func withoutRetries(ctx context.Context) context.Context {
	return context.WithValue(ctx, noRetryKey{}, true)
}

func retriesAllowed(ctx context.Context) bool {
	v, _ := ctx.Value(noRetryKey{}).(bool)
	return !v
}

// retrier holds the retry policy installed into gophercloud's ProviderClient:
// rate-limited requests (429) are retried after Retry-After or a backoff,
// and idempotent requests (GET, HEAD, DELETE) after a 5xx or a network
// error, up to maxRetries times and never past the context's deadline.
// POSTs are not repeated after an ambiguous failure: the agent lists
// servers and boots only the missing names instead.
type retrier struct {
	maxRetries int
	maxWait    time.Duration
	base       time.Duration
	log        logrus.FieldLogger
}

// backoff is the wait before retry number attempt (1-based): base·2^(n-1)
// with ±25 % jitter, at most maxWait.
func (r retrier) backoff(attempt uint) time.Duration {
	d := r.base
	for i := uint(1); i < attempt && d < r.maxWait; i++ {
		d *= 2
	}
	jitter := time.Duration(rand.Int64N(int64(d)/2+1)) - d/4
	return min(max(d+jitter, 0), r.maxWait)
}

// wait sleeps d unless ctx ends first or would end before d passes.
func wait(ctx context.Context, d time.Duration) bool {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// rateLimited is gophercloud's RetryBackoffFunc: called on 429 (and 498).
// Returning nil repeats the request.
func (r retrier) rateLimited(ctx context.Context, respErr *gophercloud.ErrUnexpectedResponseCode, _ error, failCount uint) error {
	if !retriesAllowed(ctx) || int(failCount) > r.maxRetries {
		return *respErr
	}
	d, ok := parseRetryAfter(respErr.ResponseHeader.Get("Retry-After"), time.Now())
	if !ok {
		d = r.backoff(failCount)
	} else if d > r.maxWait {
		return *respErr // the caller learns RetryAfter from the error
	}
	r.log.WithFields(logrus.Fields{"method": respErr.Method, "url": respErr.URL, "attempt": failCount, "wait": d}).
		Debug("openstack: rate limited, retrying")
	if !wait(ctx, d) {
		return *respErr
	}
	return nil
}

// failed is gophercloud's RetryFunc: called on transport errors and on
// unexpected status codes. Returning nil repeats the request.
func (r retrier) failed(ctx context.Context, method, url string, opts *gophercloud.RequestOpts, err error, failCount uint) error {
	if !retriesAllowed(ctx) || int(failCount) > r.maxRetries || ctx.Err() != nil {
		return err
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodDelete:
	default:
		return err
	}
	if opts != nil && opts.RawBody != nil {
		return err
	}
	d := r.backoff(failCount)
	if resp, ok := unexpectedCode(err); ok {
		switch resp.Actual {
		case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		default:
			return err
		}
		if ra, ok := parseRetryAfter(resp.ResponseHeader.Get("Retry-After"), time.Now()); ok && ra > 0 {
			if ra > r.maxWait {
				return err
			}
			d = ra
		}
	} else if !retryableNetError(err) {
		return err
	}
	r.log.WithFields(logrus.Fields{"method": method, "url": url, "attempt": failCount, "wait": d, "error": err.Error()}).
		Debug("openstack: request failed, retrying")
	if !wait(ctx, d) {
		return err
	}
	return nil
}

// retryableNetError reports whether err is a network failure worth repeating
// an idempotent request for.
func retryableNetError(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || tlsError(err) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}
