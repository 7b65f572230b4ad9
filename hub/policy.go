package hub

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/canopy-grid/canopy/hub/planner"
)

// policy is the part of the config a reload (SIGHUP, `hub reload`)
// changes on a running hub. The rest (addresses, TLS, state file, the job
// source, periods) is read at start and needs a restart.
type policy struct {
	Planner      planner.Config
	Groups       map[string]GroupConfig
	Sites        map[string]SiteConfig
	EventsMaxAge time.Duration
}

func policyOf(c Config) *policy {
	return &policy{Planner: c.Planner, Groups: c.Groups, Sites: c.Sites, EventsMaxAge: c.EventsMaxAge}
}

// policy returns the policy in force (immutable; replaced whole on reload).
func (h *Hub) policy() *policy { return h.pol.Load() }

// reloadable are the config's keys a reload applies.
var reloadable = []string{"planner", "groups", "sites", "events_max_age"}

// ReloadResult says what a reload changed.
type ReloadResult struct {
	// Applied are the top-level keys that changed and now apply.
	Applied []string `json:"applied"`
	// NeedRestart are keys that changed but apply only after a restart.
	NeedRestart []string `json:"need_restart,omitempty"`
}

// Reload applies a new config: it is validated first and, if invalid,
// refused whole (the running config stays). What changed among the
// reloadable keys applies from the next cycle; other changes are reported
// as needing a restart. The reload is written to the events log.
func (h *Hub) Reload(ctx context.Context, cfg Config, by string) (ReloadResult, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return ReloadResult{}, err
	}
	var res ReloadResult
	old := h.cfg
	cur := h.policy()
	oldPol := Config{Planner: cur.Planner, Groups: cur.Groups, Sites: cur.Sites, EventsMaxAge: cur.EventsMaxAge}
	for _, key := range changedKeys(old, cfg) {
		if !slices.Contains(reloadable, key) {
			res.NeedRestart = append(res.NeedRestart, key)
		}
	}
	for _, key := range changedKeys(oldPol, cfg) {
		if slices.Contains(reloadable, key) {
			res.Applied = append(res.Applied, key)
		}
	}
	err := h.admin(ctx, func(l *loop, now time.Time) error {
		h.pol.Store(policyOf(cfg))
		detail := "nothing changed"
		if len(res.Applied) > 0 {
			detail = "applied " + strings.Join(res.Applied, ", ")
		}
		if len(res.NeedRestart) > 0 {
			detail += "; changed but applied only after a restart: " + strings.Join(res.NeedRestart, ", ")
		}
		l.event(now, "", "", "", "config_reloaded", detail+" (by "+by+")")
		return nil
	})
	if err != nil {
		return ReloadResult{}, fmt.Errorf("reload: %w", err)
	}
	return res, nil
}

// changedKeys lists the top-level config keys (yaml names) whose values
// differ between a and b.
func changedKeys(a, b Config) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	t := va.Type()
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, key)
		}
	}
	return out
}
