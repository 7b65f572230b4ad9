// Package vmagent is the agent inside every worker VM. At boot it reads its
// metadata and user-data, writes the HTCondor startd configuration that ties
// the VM to its site, group and VM type, starts HTCondor, and then checks in
// with its site agent until it is told to retire, when it stops taking jobs,
// lets running ones finish, reports, and exits.
package vmagent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Metadata is what the cloud says about the VM.
type Metadata struct {
	UUID string            `json:"uuid"`
	Name string            `json:"name"`
	Meta map[string]string `json:"meta"`
}

// MetadataSource reads the VM's metadata and user-data. Implementations: the
// OpenStack metadata service (HTTP) and a plain directory.
type MetadataSource interface {
	Fetch(ctx context.Context) (Metadata, []byte, error)
}

// CommandRunner runs HTCondor's command-line tools.
type CommandRunner interface {
	Run(ctx context.Context, name string, args ...string) error
}

// Options configure a vmagent.
type Options struct {
	// Root is prepended to every path the vmagent writes (/ in a real VM).
	Root   string
	Source MetadataSource
	Runner CommandRunner
	Log    *logrus.Entry
	// HTTP is used for check-ins; nil means a client with a 10 s timeout.
	HTTP *http.Client
}

// CondorConfigPath is where the startd configuration is written, under Root.
const CondorConfigPath = "/etc/condor/config.d/50-canopy.conf"

// maxMetadata bounds how much of a metadata answer is read.
const maxMetadata = 1 << 20

// Run contextualizes the VM and checks in until retired or ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	md, ud, err := fetchWithRetry(ctx, o.Source, o.Log)
	if err != nil {
		return err
	}
	s, err := ParseUserData(ud)
	if err != nil {
		return fmt.Errorf("read settings from user-data: %w", err)
	}
	log := o.Log.WithFields(logrus.Fields{"vm": md.Name, "site": s.Site, "group": s.Group, "vm_type": s.VMType})
	changed, err := WriteCondorConfig(o.Root, md, s)
	if err != nil {
		return err
	}
	log.WithField("changed", changed).WithField("path", filepath.Join(o.Root, CondorConfigPath)).Info("startd config written")
	if err := o.Runner.Run(ctx, "condor_master"); err != nil {
		return fmt.Errorf("start condor: %w", err)
	}

	every := s.CheckinEvery
	if every <= 0 {
		every = 10 * time.Second
	}
	c := &checkin{http: o.HTTP, s: s, md: md}
	state := "ready"
	failures := 0
	for {
		resp, err := c.do(ctx, state)
		switch {
		case err != nil:
			failures++
			// Logged at most every tenth failure: a VM cut off from its agent
			// keeps working; the agent notices by the silence.
			if failures%10 == 1 {
				log.WithError(err).Warn("check-in failed")
			}
		case state == "drained":
			log.Info("retired; shutting down")
			return nil
		case resp.Retire:
			failures = 0
			log.WithFields(logrus.Fields{"reason": resp.Reason, "deadline": resp.Deadline}).Info("retirement ordered")
			if err := retire(ctx, o.Runner, md.Name, resp.Deadline); err != nil {
				log.WithError(err).Warn("peaceful shutdown")
			}
			state = "drained"
			continue // report at once
		default:
			failures = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// retire stops the startd peacefully: running jobs finish, no new ones start.
// HTCondor exits on its own when the last job ends (or the deadline passes,
// when the agent deletes the server).
func retire(ctx context.Context, r CommandRunner, name string, _ time.Duration) error {
	return r.Run(ctx, "condor_off", "-peaceful", "-startd")
}

func fetchWithRetry(ctx context.Context, src MetadataSource, log *logrus.Entry) (Metadata, []byte, error) {
	var lastErr error
	delay := 200 * time.Millisecond
	for attempt := 1; attempt <= 10; attempt++ {
		md, ud, err := src.Fetch(ctx)
		if err == nil {
			return md, ud, nil
		}
		lastErr = err
		log.WithError(err).WithField("attempt", attempt).Warn("read metadata")
		select {
		case <-ctx.Done():
			return Metadata{}, nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
	return Metadata{}, nil, fmt.Errorf("read metadata: gave up after 10 attempts: %w", lastErr)
}

// HTTPSource reads the OpenStack metadata service at BaseURL
// (http://169.254.169.254 in a real cloud).
type HTTPSource struct {
	BaseURL string
	Client  *http.Client
}

// Fetch implements MetadataSource.
func (h HTTPSource) Fetch(ctx context.Context) (Metadata, []byte, error) {
	c := h.Client
	if c == nil {
		c = &http.Client{Timeout: 5 * time.Second}
	}
	base := strings.TrimSuffix(h.BaseURL, "/")
	mdb, err := get(ctx, c, base+"/openstack/latest/meta_data.json")
	if err != nil {
		return Metadata{}, nil, err
	}
	md, err := parseMetadata(mdb)
	if err != nil {
		return Metadata{}, nil, err
	}
	ud, err := get(ctx, c, base+"/openstack/latest/user_data")
	if err != nil {
		return Metadata{}, nil, err
	}
	return md, ud, nil
}

// DirSource reads meta_data.json and user_data from a directory laid out as
// an OpenStack config drive (openstack/latest/...).
type DirSource struct{ Dir string }

// Fetch implements MetadataSource.
func (d DirSource) Fetch(context.Context) (Metadata, []byte, error) {
	mdb, err := readLimited(filepath.Join(d.Dir, "openstack", "latest", "meta_data.json"))
	if err != nil {
		return Metadata{}, nil, err
	}
	md, err := parseMetadata(mdb)
	if err != nil {
		return Metadata{}, nil, err
	}
	ud, err := readLimited(filepath.Join(d.Dir, "openstack", "latest", "user_data"))
	return md, ud, err
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxMetadata))
}

func parseMetadata(b []byte) (Metadata, error) {
	var md Metadata
	if err := json.Unmarshal(b, &md); err != nil {
		return md, fmt.Errorf("meta_data.json: %w", err)
	}
	if md.UUID == "" || md.Name == "" {
		return md, errors.New("meta_data.json lacks uuid or name")
	}
	return md, nil
}

func get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxMetadata))
}

type checkin struct {
	http *http.Client
	s    Settings
	md   Metadata
}

type checkinResponse struct {
	Retire   bool          `json:"retire"`
	Deadline time.Duration `json:"deadline"`
	Reason   string        `json:"reason"`
}

func (c *checkin) do(ctx context.Context, state string) (checkinResponse, error) {
	var out checkinResponse
	body, _ := json.Marshal(map[string]string{"server_id": c.md.UUID, "server": c.md.Name, "state": state})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.s.AgentURL, "/")+"/v1/checkin", bytes.NewReader(body))
	if err != nil {
		return out, err
	}
	req.Header.Set("Authorization", "Bearer "+c.s.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("check-in: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("check-in answer: %w", err)
	}
	return out, nil
}
