package squidreg

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Advertiser posts a squid's registration to the hub periodically, with
// its current load. It is the library side of the agent's squid mode,
// which runs on the cache host.
type Advertiser struct {
	// HubURL is the hub's HTTP base URL, e.g. https://hub.example.org:8080.
	HubURL string
	// Token is the hub's advertise token (sent as a bearer token).
	Token string
	// Registration describes the squid; Load is filled from Load below.
	Registration Registration
	// Load, when set, returns the squid's current load in KB/s (for
	// example (&LoadMeter{URL: "http://127.0.0.1:3128"}).Load). An error
	// is logged and the registration is sent with the last good load.
	Load func(ctx context.Context) (float64, error)
	// Every is the period; 0 means 60 s (three chances within the hub's
	// default 180 s expiry).
	Every time.Duration
	// Client is used for posting; nil means a client with a 10 s timeout.
	Client *http.Client
	Log    *logrus.Entry

	lastLoad float64
}

// Run advertises at once and then every Every until ctx ends. Failures are
// logged (the first, then every tenth) and retried at the next period.
func (a *Advertiser) Run(ctx context.Context) error {
	reg, err := a.Registration.Normalize()
	if err != nil {
		return err
	}
	every := a.Every
	if every <= 0 {
		every = 60 * time.Second
	}
	log := a.Log.WithFields(logrus.Fields{"squid": reg.Name, "hub": a.HubURL})
	t := time.NewTicker(every)
	defer t.Stop()
	failures := 0
	for {
		if _, err := a.Advertise(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if failures%10 == 0 {
				log.WithError(err).WithField("failures", failures+1).Warn("squid advertisement failed")
			}
			failures++
		} else {
			if failures > 0 {
				log.WithField("after_failures", failures).Info("squid advertisement accepted again")
			}
			failures = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Advertise sends the registration once and returns the hub's answer.
func (a *Advertiser) Advertise(ctx context.Context) (AdvertiseResponse, error) {
	var out AdvertiseResponse
	reg := a.Registration
	if a.Load != nil {
		load, err := a.Load(ctx)
		if err != nil {
			a.Log.WithError(err).Debug("read squid load; sending the last good one")
			load = a.lastLoad
		}
		reg.Load, a.lastLoad = load, load
	}
	reg, err := reg.Normalize()
	if err != nil {
		return out, err
	}
	body, err := json.Marshal(reg)
	if err != nil {
		return out, fmt.Errorf("encode registration: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(a.HubURL, "/")+PathSquids, bytes.NewReader(body))
	if err != nil {
		return out, fmt.Errorf("advertise to %s: %w", a.HubURL, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+a.Token)
	c := a.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return out, fmt.Errorf("advertise to %s: %w", a.HubURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("advertise to %s: %s: %s", a.HubURL, resp.Status, truncate(strings.TrimSpace(string(b)), 200))
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("advertise to %s: answer: %w", a.HubURL, err)
	}
	if out.Name == "" {
		return out, errors.New("advertise: the hub's answer names no squid")
	}
	return out, nil
}

// AdvertiseResponse is the hub's answer to an advertisement.
type AdvertiseResponse struct {
	// Name is the squid's name in the registry.
	Name string `json:"name"`
	// Expiry is how long the hub keeps the squid without news.
	Expiry time.Duration `json:"expiry"`
	// State is where the squid stands with the hub.
	State State `json:"state"`
}

// State is where a squid stands with the hub.
type State string

// Squid states.
const (
	// StatePending: registered, first verification not done yet.
	StatePending State = "pending"
	// StateVerified: the last verification succeeded.
	StateVerified State = "verified"
	// StateOriginDown: the squid answered, but no squid could fetch the
	// probe from its origin; still offered.
	StateOriginDown State = "origin-down"
	// StateFailed: the last verification failed; not offered.
	StateFailed State = "failed"
	// StateUnverified: not verified by policy (no probe for its kinds, or
	// local-only); offered while it keeps registering.
	StateUnverified State = "unverified"
)
