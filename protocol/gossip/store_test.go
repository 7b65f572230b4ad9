package gossip

import (
	"fmt"
	"testing"
	"time"
)

func TestStoreSquidsNewerWins(t *testing.T) {
	s := newStore("vm-1", time.Now)
	steps := []struct {
		in      SquidList
		applied bool
		holds   uint64
	}{
		{SquidList{Version: 5, Proxies: []string{"a"}}, true, 5},
		{SquidList{Version: 5, Proxies: []string{"b"}}, false, 5},
		{SquidList{Version: 4, Proxies: []string{"c"}}, false, 5},
		{SquidList{Version: 6, Proxies: []string{"d"}}, true, 6},
	}
	for i, st := range steps {
		if got := s.applySquids(st.in, nil); got != st.applied {
			t.Errorf("step %d: applied %v, want %v", i, got, st.applied)
		}
		if got := s.currentSquids().Version; got != st.holds {
			t.Errorf("step %d: holds version %d, want %d", i, got, st.holds)
		}
	}
	if p := s.currentSquids().Proxies; len(p) != 1 || p[0] != "d" {
		t.Errorf("holds %v", p)
	}
}

func TestStoreOrders(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tests := []struct {
		name    string
		orders  []RetireOrder
		applied []bool
		self    bool // Retired fired
		held    []string
	}{
		{"order for another VM", []RetireOrder{{Server: "vm-2", Deadline: now, Version: 1}}, []bool{true}, false, []string{"vm-2"}},
		{"order for self", []RetireOrder{{Server: "vm-1", Deadline: now, Version: 1}}, []bool{true}, true, []string{"vm-1"}},
		{"older and equal versions ignored", []RetireOrder{
			{Server: "vm-2", Deadline: now, Version: 5},
			{Server: "vm-2", Deadline: now.Add(time.Hour), Version: 5},
			{Server: "vm-2", Deadline: now.Add(time.Hour), Version: 4},
			{Server: "vm-2", Deadline: now.Add(time.Minute), Version: 6},
		}, []bool{true, false, false, true}, false, []string{"vm-2"}},
		{"long-expired order for another VM dropped", []RetireOrder{{Server: "vm-2", Deadline: now.Add(-2 * orderTTL), Version: 1}},
			[]bool{false}, false, nil},
		{"expired order for self kept", []RetireOrder{{Server: "vm-1", Deadline: now.Add(-2 * orderTTL), Version: 1}},
			[]bool{true}, true, []string{"vm-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore("vm-1", clock)
			for i, o := range tt.orders {
				if got := s.applyOrder(o, nil); got != tt.applied[i] {
					t.Errorf("order %d applied %v, want %v", i, got, tt.applied[i])
				}
			}
			select {
			case <-s.retired:
				if !tt.self {
					t.Error("Retired fired")
				}
			default:
				if tt.self {
					t.Error("Retired did not fire")
				}
			}
			_, orders := s.snapshot()
			if len(orders) != len(tt.held) {
				t.Fatalf("holds %d orders, want %d", len(orders), len(tt.held))
			}
			for _, name := range tt.held {
				if _, ok := s.order(name); !ok {
					t.Errorf("no order for %s", name)
				}
			}
		})
	}
}

func TestStoreBoundsOrders(t *testing.T) {
	now := time.Now()
	s := newStore("vm-self", func() time.Time { return now })
	s.applyOrder(RetireOrder{Server: "vm-self", Deadline: now, Version: 1}, nil)
	for i := range MaxOrders + 10 {
		s.applyOrder(RetireOrder{Server: fmt.Sprintf("vm-%d", i), Deadline: now, Version: uint64(i + 2)}, nil)
	}
	_, orders := s.snapshot()
	if len(orders) != MaxOrders {
		t.Fatalf("holds %d orders, want %d", len(orders), MaxOrders)
	}
	if _, ok := s.order("vm-self"); !ok {
		t.Error("own order evicted")
	}
	if _, ok := s.order("vm-0"); ok {
		t.Error("oldest order kept")
	}
	if _, ok := s.order(fmt.Sprintf("vm-%d", MaxOrders+9)); !ok {
		t.Error("newest order evicted")
	}
}

func TestStoreLeavingNotices(t *testing.T) {
	s := newStore("agent-x", time.Now)
	s.noteLeaving("vm-1")
	if !s.takeLeaving("vm-1") {
		t.Fatal("notice lost")
	}
	if s.takeLeaving("vm-1") {
		t.Fatal("notice taken twice")
	}
	for i := range maxLeaving + 5 {
		s.noteLeaving(fmt.Sprintf("vm-%d", i))
	}
	if len(s.leaving) > maxLeaving {
		t.Fatalf("holds %d notices", len(s.leaving))
	}
}
