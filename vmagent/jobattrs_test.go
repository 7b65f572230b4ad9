package vmagent

import (
	"strings"
	"testing"
	"time"
)

// TestCondorConfigJobAttributes: the jobs' keep-alive and maximum lifetime
// the VM was booted for are advertised in its slot ads, in seconds, and
// only when set.
func TestCondorConfigJobAttributes(t *testing.T) {
	tests := []struct {
		name        string
		keep, limit time.Duration
		lines       []string
		absent      []string
	}{
		{name: "none", absent: []string{"CanopyKeepAlive", "CanopyMaxLifetime"},
			lines: []string{"STARTD_ATTRS = $(STARTD_ATTRS) CanopyVMID CanopyVMName CanopySite CanopyGroup VMType"}},
		{name: "both", keep: 5 * time.Minute, limit: 90 * time.Minute,
			lines: []string{"CanopyKeepAlive = 300", "CanopyMaxLifetime = 5400",
				"STARTD_ATTRS = $(STARTD_ATTRS) CanopyVMID CanopyVMName CanopySite CanopyGroup VMType CanopyKeepAlive CanopyMaxLifetime"}},
		{name: "max lifetime only", limit: 2 * time.Hour, absent: []string{"CanopyKeepAlive"},
			lines: []string{"CanopyMaxLifetime = 7200",
				"STARTD_ATTRS = $(STARTD_ATTRS) CanopyVMID CanopyVMName CanopySite CanopyGroup VMType CanopyMaxLifetime"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := minimalSettings()
			s.KeepAlive, s.MaxLifetime = tt.keep, tt.limit
			conf, err := CondorConfig(testMetadata, s)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range tt.lines {
				if !containsLine(conf, l) {
					t.Errorf("config lacks %q:\n%s", l, conf)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(conf, a) {
					t.Errorf("config mentions %s", a)
				}
			}
		})
	}
	s := minimalSettings()
	s.MaxLifetime = -time.Minute
	if _, err := CondorConfig(testMetadata, s); err == nil {
		t.Error("a negative max_lifetime was accepted")
	}
}
