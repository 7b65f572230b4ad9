package store

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPlanIDsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.NextPlanID()
	b, _ := s.NextPlanID()
	if a != 1 || b != 2 {
		t.Fatalf("ids %d %d", a, b)
	}
	if err := s.Append(Event{At: time.Now(), Site: "west", Kind: "boot", Detail: "x"}, Event{Kind: "retire"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, _ := s.NextPlanID()
	if c != 3 {
		t.Fatalf("after restart id %d, want 3", c)
	}
	ev, err := s.Recent(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev) != 2 || ev[0].Kind != "retire" || ev[1].Kind != "boot" || ev[0].Seq <= ev[1].Seq {
		t.Fatalf("events %+v", ev)
	}
}

func TestSecondHubRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "another hub") {
		t.Fatalf("second open: %v", err)
	}
}

func TestHeldSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetHeld("vm-1", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHeld("vm-2", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHeld("vm-2", false); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	held, err := s.Held()
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 1 || !held["vm-1"] {
		t.Fatalf("held = %v", held)
	}
}
