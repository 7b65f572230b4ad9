package vmagent

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/canopy-grid/canopy/deploy/config"
)

// SettingsPath is where cloud-init writes the vmagent's settings inside a
// VM; vmagent reads the same entry straight from the user-data.
const SettingsPath = "/etc/canopy/vmagent.yaml"

// Settings are what a site agent tells a VM at boot, through user-data.
type Settings struct {
	// AgentURL is the site agent's VM endpoint, e.g. http://10.0.0.5:7080.
	AgentURL string `yaml:"agent_url"`
	// Token proves the VM's identity to its agent (see agent/vmtoken).
	Token string `yaml:"token"`
	// CondorHost is the HTCondor central manager (collector) address.
	CondorHost string `yaml:"condor_host"`
	Site       string `yaml:"site"`
	Group      string `yaml:"group"`
	VMType     string `yaml:"vm_type"`
	// CheckinEvery is how often the VM reports to its agent.
	CheckinEvery time.Duration `yaml:"checkin_every"`
}

// Validate checks that the settings can drive a VM.
func (s Settings) Validate() error {
	var missing []string
	for name, v := range map[string]string{"agent_url": s.AgentURL, "token": s.Token, "condor_host": s.CondorHost,
		"site": s.Site, "group": s.Group, "vm_type": s.VMType} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("vmagent settings lack %v", missing)
	}
	return nil
}

type cloudConfig struct {
	WriteFiles []writeFile `yaml:"write_files"`
}

type writeFile struct {
	Path        string `yaml:"path"`
	Permissions string `yaml:"permissions,omitempty"`
	Owner       string `yaml:"owner,omitempty"`
	Content     string `yaml:"content"`
}

// RenderUserData renders s as a #cloud-config document whose write_files
// entry puts the settings at SettingsPath (mode 0600), so that a VM with
// cloud-init gets the file and vmagent can read the same entry directly.
func RenderUserData(s Settings) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	body, err := yaml.Marshal(settingsYAML(s))
	if err != nil {
		return nil, fmt.Errorf("render user-data: %w", err)
	}
	doc, err := yaml.Marshal(cloudConfig{WriteFiles: []writeFile{{Path: SettingsPath, Permissions: "0600", Owner: "root:root", Content: string(body)}}})
	if err != nil {
		return nil, fmt.Errorf("render user-data: %w", err)
	}
	return append([]byte("#cloud-config\n"), doc...), nil
}

// settingsYAML writes durations as strings, which config.Decode reads back.
func settingsYAML(s Settings) map[string]string {
	m := map[string]string{"agent_url": s.AgentURL, "token": s.Token, "condor_host": s.CondorHost,
		"site": s.Site, "group": s.Group, "vm_type": s.VMType}
	if s.CheckinEvery > 0 {
		m["checkin_every"] = s.CheckinEvery.String()
	}
	return m
}

// maxUserData is Nova's limit on user-data (64 KiB, base64-encoded).
const maxUserData = 64 << 10

// ParseUserData finds the settings in a #cloud-config user-data document.
func ParseUserData(b []byte) (Settings, error) {
	var s Settings
	if len(b) > maxUserData {
		return s, fmt.Errorf("user-data is %d bytes, limit %d", len(b), maxUserData)
	}
	if !bytes.HasPrefix(b, []byte("#cloud-config")) {
		return s, errors.New("user-data is not a #cloud-config document")
	}
	var cc cloudConfig
	if err := yaml.Unmarshal(b, &cc); err != nil {
		return s, fmt.Errorf("user-data: %w", err)
	}
	for _, f := range cc.WriteFiles {
		if f.Path == SettingsPath {
			if err := config.Decode("user-data:"+SettingsPath, []byte(f.Content), &s); err != nil {
				return s, err
			}
			return s, s.Validate()
		}
	}
	return s, fmt.Errorf("user-data has no write_files entry for %s", SettingsPath)
}
