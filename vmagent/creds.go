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

	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// CredentialsPath holds what the VM's enrollment gave it (mode 0600 in a
// 0700 directory, root's only): its check-in token, the expiry of its
// HTCondor token (the token itself is CondorTokenPath) and the site's
// gossip key. A restarted vmagent reads it rather than enrolling again:
// the enrollment token in the user-data is spent.
const CredentialsPath = "/var/lib/canopy/vmagent/credentials.json"

// Credentials are the VM's secrets, from its enrollment and renewed by
// check-ins.
type Credentials struct {
	// ServerID is the server they were issued to: a file left in an image
	// taken from another VM is not this VM's.
	ServerID string `json:"server_id"`
	// Token is the check-in token, valid until TokenExpires.
	Token        string    `json:"token"`
	TokenExpires time.Time `json:"token_expires"`
	// CondorExpires is when the HTCondor token in CondorTokenPath
	// expires; zero: the VM holds none.
	CondorExpires time.Time `json:"condor_expires,omitzero"`
	// GossipKey is the site gossip pool's key (base64); empty: none.
	GossipKey string `json:"gossip_key,omitempty"`
}

// maxCredentialsFile bounds the credentials file.
const maxCredentialsFile = 64 << 10

// loadCredentials reads the stored credentials; nil (and no error) when
// there are none for this server.
func loadCredentials(root, serverID string) (*Credentials, error) {
	b, err := readLimited(filepath.Join(root, CredentialsPath), maxCredentialsFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	var c Credentials
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("read credentials %s: %w", CredentialsPath, err)
	}
	if c.ServerID != serverID {
		return nil, nil
	}
	if err := vmproto.ValidToken(c.Token); err != nil {
		return nil, fmt.Errorf("read credentials %s: check-in token: %w", CredentialsPath, err)
	}
	return &c, nil
}

// saveCredentials writes the credentials atomically, root's only.
func saveCredentials(root string, c *Credentials) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	if err := ensurePrivateDir(root, filepath.Dir(CredentialsPath)); err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	if _, err := writeFile(root, CredentialsPath, b, 0o600); err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	return nil
}

// RefusedError is an answer from the agent that no retry changes (4xx):
// a spent or expired enrollment token, a VM the agent does not know.
type RefusedError struct {
	Status int
	Msg    string
}

// Error says what the agent answered.
func (e *RefusedError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Msg)
}

// maxAgentAnswer bounds the agent's answers.
const maxAgentAnswer = 64 << 10

// postJSON posts in to the agent's path with a bearer token and decodes
// the answer into out. A 4xx answer is a *RefusedError; anything else
// that fails (network, 5xx, a bad answer) is worth retrying.
func postJSON(ctx context.Context, client *http.Client, agentURL, path, token string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(agentURL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAgentAnswer+1))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if len(b) > maxAgentAnswer {
		return fmt.Errorf("answer over %d bytes", maxAgentAnswer)
	}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		return &RefusedError{Status: resp.StatusCode, Msg: fmt.Sprintf("%.200s", strings.TrimSpace(string(b)))}
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %.200s", resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("answer: %w", err)
	}
	return nil
}

// enroll spends the VM's enrollment token on the agent's enrollment
// endpoint and returns its credentials, retrying what may pass (the agent
// unreachable or busy) with backoff until ctx ends; a refusal ends it.
func enroll(ctx context.Context, client *http.Client, s vmproto.Settings, md Metadata, log *logrus.Entry) (*vmproto.EnrollResponse, error) {
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		var resp vmproto.EnrollResponse
		err := postJSON(ctx, client, s.AgentURL, vmproto.PathEnroll, s.EnrollToken,
			vmproto.EnrollRequest{ServerID: md.UUID, Server: md.Name}, &resp)
		if err == nil {
			err = checkEnrollment(resp)
			if err == nil {
				return &resp, nil
			}
		}
		var re *RefusedError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("enrollment refused by the agent (%w): this VM cannot get its credentials", err)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("enroll: %w (last: %v)", ctx.Err(), err)
		}
		if attempt == 1 || attempt%10 == 0 {
			log.WithError(err).WithField("attempt", attempt).Warn("enrollment failed; retrying")
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("enroll: %w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// checkEnrollment checks what an enrollment answered before anything is
// written.
func checkEnrollment(r vmproto.EnrollResponse) error {
	if err := vmproto.ValidToken(r.Token); err != nil {
		return fmt.Errorf("enrollment answer: check-in token: %w", err)
	}
	if r.Condor != nil {
		if err := vmproto.ValidIDToken(r.Condor.Token); err != nil {
			return fmt.Errorf("enrollment answer: HTCondor token: %w", err)
		}
	}
	return nil
}

// obtainCredentials returns the VM's credentials: those stored by an
// earlier run in this boot or image, else a fresh enrollment, whose
// HTCondor token is written before anything else so that HTCondor starts
// with it.
func obtainCredentials(ctx context.Context, root string, client *http.Client, s vmproto.Settings, md Metadata, log *logrus.Entry) (*Credentials, error) {
	c, err := loadCredentials(root, md.UUID)
	if err != nil {
		return nil, err
	}
	if c != nil {
		if _, err := os.Stat(filepath.Join(root, CondorTokenPath)); err != nil && !c.CondorExpires.IsZero() {
			// The token file is gone: report none, so that the agent
			// sends a new one at the next check-in.
			log.WithError(err).Warn("HTCondor token file missing: asking the agent for a new one")
			c.CondorExpires = time.Time{}
		}
		log.WithField("token_expires", c.TokenExpires.Format(time.RFC3339)).Info("credentials from an earlier run: not enrolling again")
		return c, nil
	}
	start := time.Now()
	r, err := enroll(ctx, client, s, md, log)
	if err != nil {
		return nil, err
	}
	c = &Credentials{ServerID: md.UUID, Token: r.Token, TokenExpires: r.TokenExpires, GossipKey: r.GossipKey}
	if r.Condor != nil {
		if _, err := WriteCondorToken(root, r.Condor.Token); err != nil {
			return nil, err
		}
		c.CondorExpires = r.Condor.Expires
	}
	if err := saveCredentials(root, c); err != nil {
		return nil, err
	}
	log.WithFields(logrus.Fields{"elapsed": time.Since(start).Round(time.Microsecond), "condor_token": r.Condor != nil,
		"condor_token_expires": c.CondorExpires.Format(time.RFC3339)}).Info("enrolled")
	return c, nil
}

// applyRenewal stores what a check-in's answer renewed: a new check-in
// token, a new HTCondor token (written over the old one). It reports
// what it renewed; on error the old credentials stay in use and the next
// check-in asks again.
func applyRenewal(root string, c *Credentials, resp vmproto.CheckinResponse) (renewed []string, err error) {
	next := *c
	if resp.Token != "" {
		if err := vmproto.ValidToken(resp.Token); err != nil {
			return nil, fmt.Errorf("renewed check-in token: %w", err)
		}
		next.Token, next.TokenExpires = resp.Token, resp.TokenExpires
		renewed = append(renewed, "check-in token")
	}
	if resp.Condor != nil {
		if _, err := WriteCondorToken(root, resp.Condor.Token); err != nil {
			return nil, err
		}
		next.CondorExpires = resp.Condor.Expires
		renewed = append(renewed, "HTCondor token")
	}
	if len(renewed) == 0 {
		return nil, nil
	}
	if err := saveCredentials(root, &next); err != nil {
		return nil, err
	}
	*c = next
	return renewed, nil
}
