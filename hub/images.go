package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub/imageplan"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/pki"
)

// ImagesConfig configures image distribution (the config's images:).
type ImagesConfig struct {
	// Wants are rows of the desired matrix held by the config; the API
	// adds its own (durable in the state file) and cannot remove these.
	Wants []ImageWantConfig `yaml:"wants"`
	// QuotaBytes caps, per site, the total size of Canopy's images there.
	QuotaBytes map[string]int64 `yaml:"quota_bytes"`
	// Limits and backoff of the transfers (max_per_dest, max_per_source,
	// backoff_min, backoff_max).
	imageplan.Config `yaml:",inline"`
}

// ImageWantConfig is one row of the desired matrix in the config.
type ImageWantConfig struct {
	Name string `yaml:"name"`
	// Hash is "algo:hex" (sha512 as Glance's os_hash_value, sha256, md5).
	Hash  string   `yaml:"hash"`
	Sites []string `yaml:"sites"`
}

func (c ImagesConfig) validate() []error {
	var errs []error
	for i, w := range c.Wants {
		if _, err := parseWant(w.Name, w.Hash, w.Sites); err != nil {
			errs = append(errs, fmt.Errorf("images.wants[%d]: %w", i, err))
		}
	}
	for _, site := range sortedKeys(c.QuotaBytes) {
		if c.QuotaBytes[site] < 0 {
			errs = append(errs, fmt.Errorf("images.quota_bytes.%s is %d, want 0 (none) or more", site, c.QuotaBytes[site]))
		}
	}
	if c.MaxPerDest < 0 || c.MaxPerSource < 0 || c.BackoffMin < 0 || c.BackoffMax < 0 {
		errs = append(errs, errors.New("images: max_per_dest, max_per_source, backoff_min and backoff_max must not be negative"))
	}
	return errs
}

// parseWant checks a row of the desired matrix: a name, an algo:hex digest,
// at least one valid site name.
func parseWant(name, hash string, sites []string) (imageplan.Want, error) {
	if name == "" || len(name) > 255 {
		return imageplan.Want{}, fmt.Errorf("image name of %d bytes, want 1 to 255", len(name))
	}
	algo, hx, err := images.ParseHash(hash)
	if err != nil {
		return imageplan.Want{}, fmt.Errorf("image %s: %w", name, err)
	}
	if len(sites) == 0 {
		return imageplan.Want{}, fmt.Errorf("image %s: no sites", name)
	}
	for _, s := range sites {
		if err := pki.ValidSite(s); err != nil {
			return imageplan.Want{}, fmt.Errorf("image %s: %w", name, err)
		}
	}
	ss := slices.Clone(sites)
	slices.Sort(ss)
	return imageplan.Want{Ref: images.Ref{Name: name, Algo: algo, Hex: hx}, Sites: slices.Compact(ss)}, nil
}

// ImageStatus is the image distribution's state: the matrix, conflicts,
// copies under way, and what each site holds (GET /api/v1/images).
type ImageStatus struct {
	At        time.Time                    `json:"at"`
	Wants     []imageplan.Want             `json:"wants"`
	Cells     []imageplan.Cell             `json:"cells"`
	Conflicts []imageplan.Conflict         `json:"conflicts"`
	Transfers []ImageTransfer              `json:"transfers"`
	Kept      []imageplan.Kept             `json:"kept,omitempty"`
	Failures  map[string]imageplan.Failure `json:"failures,omitempty"`
	Sites     map[string][]images.Image    `json:"sites"`
}

// ImageTransfer is one copy under way, with its last progress report.
type ImageTransfer struct {
	imageplan.Transfer
	StartedAt time.Time `json:"started_at"`
	State     string    `json:"state"`
	Attempt   int       `json:"attempt"`
	Bytes     int64     `json:"bytes"`
	RateBps   float64   `json:"rate_bps"`
	ETA       string    `json:"eta,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// imageState is the control loop's soft image state: copies under way and
// failure records (lost on restart: a copy under way then is found by the
// next inventory, or started again after its agent's result never came).
type imageState struct {
	transfers map[string]*ImageTransfer // by command id
	failures  map[string]imageplan.Failure
	deleting  map[string]time.Time // site|image id -> when the delete was sent
}

// progressBox carries agents' progress reports to the control loop.
type progressBox struct {
	mu   sync.Mutex
	last map[string]siteProgress
}

// siteProgress is a progress report and the site whose agent sent it.
type siteProgress struct {
	site string
	protocol.ImageProgress
}

func (b *progressBox) put(site string, p protocol.ImageProgress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last == nil {
		b.last = map[string]siteProgress{}
	}
	if len(b.last) > 10000 {
		clear(b.last)
	}
	b.last[site+"|"+p.CommandID] = siteProgress{site: site, ImageProgress: p}
}

func (b *progressBox) take() map[string]siteProgress {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.last
	b.last = nil
	return out
}

// transferTimeout forgets a copy whose result never came (its session was
// lost): the next inventory shows whether it landed.
const transferTimeout = 6 * time.Hour

// wants merges the config's rows with the API's (the API's Seen marks
// apply to both; a config row wins over an API row of the same name).
func (l *loop) wants() []imageplan.Want {
	byName := map[string]imageplan.Want{}
	for n, w := range l.st.ImageWants {
		if w.From == "api" {
			byName[n] = w
		}
	}
	for _, wc := range l.h.cfg.Images.Wants {
		w, err := parseWant(wc.Name, wc.Hash, wc.Sites)
		if err != nil {
			continue // Validate refused it at start
		}
		w.From = "config"
		if prev, ok := l.st.ImageWants[w.Ref.Name]; ok && prev.Ref == w.Ref {
			w.Seen = prev.Seen
		}
		byName[w.Ref.Name] = w
	}
	out := make([]imageplan.Want, 0, len(byName))
	for _, n := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, byName[n])
	}
	return out
}

// imageCycle runs the image planner on the views and sends its copies and
// deletions.
func (l *loop) imageCycle(now time.Time, views map[string]*cloudView) []outgoing {
	h := l.h
	is := &l.images
	for _, p := range h.progress.take() {
		if t, ok := is.transfers[p.CommandID]; ok && t.Dest == p.site { // only the destination's agent reports on a copy
			t.State, t.Attempt, t.Bytes, t.RateBps, t.Error = p.State, p.Attempt, p.Bytes, p.RateBps, p.Error
			t.ETA = ""
			if p.ETA > 0 {
				t.ETA = p.ETA.Round(time.Second).String()
			}
		}
	}
	for id, t := range is.transfers {
		if now.Sub(t.StartedAt) > transferTimeout {
			delete(is.transfers, id)
		}
	}
	in := imageplan.Input{Now: now, HubID: h.cfg.ID, Wants: l.wants(), Sites: map[string]imageplan.Site{},
		Failures: is.failures, Config: h.cfg.Images.Config}
	st := ImageStatus{At: now, Sites: map[string][]images.Image{}, Failures: maps.Clone(is.failures)}
	for name, v := range views {
		s := imageplan.Site{Fresh: l.fresh(v, now), QuotaBytes: h.cfg.Images.QuotaBytes[name], InUse: map[string]int{}}
		if v.Inventory != nil {
			s.Images = v.Inventory.Images
			for _, vm := range v.Inventory.VMs {
				if vm.Image != "" {
					s.InUse[vm.Image]++
				}
			}
			st.Sites[name] = v.Inventory.Images
		}
		in.Sites[name] = s
	}
	for _, id := range slices.Sorted(maps.Keys(is.transfers)) {
		in.InFlight = append(in.InFlight, is.transfers[id].Transfer)
	}
	p := imageplan.Decide(in)
	// Marks of config rows the config no longer holds go.
	for _, n := range slices.Sorted(maps.Keys(l.st.ImageWants)) {
		if w := l.st.ImageWants[n]; w.From != "api" && !slices.ContainsFunc(in.Wants, func(x imageplan.Want) bool { return x.Ref == w.Ref && x.From == "config" }) {
			l.tx.DropImageWant(n)
		}
	}
	for _, c := range p.Seen {
		if w, ok := l.st.ImageWants[c.Ref.Name]; ok && w.Ref == c.Ref {
			if w.From != "api" {
				w.From = "config"
			}
			w.Seen = maps.Clone(w.Seen)
			if w.Seen == nil {
				w.Seen = map[string]time.Time{}
			}
			w.Seen[c.Site] = now
			l.tx.PutImageWant(w)
		} else if !ok {
			// A config row: its marks are kept in an API-less record.
			for _, cw := range in.Wants {
				if cw.Ref == c.Ref {
					cw.Seen = map[string]time.Time{c.Site: now}
					cw.From = "config"
					l.tx.PutImageWant(cw)
				}
			}
		}
	}
	var out []outgoing
	for _, c := range p.Copies {
		v := views[c.Dest]
		id := fmt.Sprintf("img-%s-%d", c.Dest, now.UnixNano())
		cmd := protocol.Command{ID: id, Op: protocol.CmdImageCopy, Epoch: v.Epoch, ImageCopy: &protocol.ImageCopyCommand{
			Ref: c.Ref, SourceSite: c.Source, SourceImageID: c.Image.ID, SizeBytes: c.Image.SizeBytes,
			DiskFormat: c.Image.DiskFormat, ContainerFormat: c.Image.ContainerFormat, Checksums: c.Image.Checksums}}
		if err := cmd.Validate(); err != nil {
			h.log.WithError(err).WithFields(logrus.Fields{"site": c.Dest, "image": c.Ref.Name}).Warn("image copy not sent: the source's record is not usable")
			continue
		}
		is.transfers[id] = &ImageTransfer{Transfer: imageplan.Transfer{ID: id, Ref: c.Ref, Dest: c.Dest, Source: c.Source, Total: c.Image.SizeBytes},
			StartedAt: now, State: protocol.CopyStarting}
		l.event(now, c.Dest, "", "", "image_copy", fmt.Sprintf("copy %s from %s (%d bytes)", c.Ref, c.Source, c.Image.SizeBytes))
		out = append(out, outgoing{cloud: c.Dest, cmd: cmd})
	}
	for _, d := range p.Deletes {
		key := d.Site + "|" + d.Image.ID
		if at, ok := is.deleting[key]; ok && now.Sub(at) < 10*time.Minute {
			continue // sent already; the inventory has not caught up
		}
		is.deleting[key] = now
		v := views[d.Site]
		cmd := protocol.Command{ID: fmt.Sprintf("imgdel-%s-%d", d.Site, now.UnixNano()), Op: protocol.CmdImageDelete, Epoch: v.Epoch,
			ImageDelete: &protocol.ImageDeleteCommand{ImageID: d.Image.ID, Name: d.Image.Name, Reason: d.Reason}}
		l.event(now, d.Site, "", "", "image_delete", d.Reason)
		out = append(out, outgoing{cloud: d.Site, cmd: cmd})
	}
	for k, at := range is.deleting {
		if now.Sub(at) > time.Hour {
			delete(is.deleting, k)
		}
	}
	st.Wants, st.Cells, st.Conflicts, st.Kept = in.Wants, p.Cells, p.Conflicts, p.Kept
	for _, id := range slices.Sorted(maps.Keys(is.transfers)) {
		st.Transfers = append(st.Transfers, *is.transfers[id])
	}
	h.imageStatus.Store(&st)
	h.m.observeImages(st)
	l.imageCells = p.Cells
	return out
}

// imageResult applies an image command's result.
func (l *loop) imageResult(now time.Time, cloud string, cmd protocol.Command, r protocol.Result, log *logrus.Entry) {
	h := l.h
	switch cmd.Op {
	case protocol.CmdImageCopy:
		t, ok := l.images.transfers[cmd.ID]
		delete(l.images.transfers, cmd.ID)
		if !ok {
			return
		}
		key := imageplan.FailureKey(t.Dest, t.Ref)
		if r.OK {
			delete(l.images.failures, key)
			h.m.imageCopies.WithLabelValues(cloud, "ok").Inc()
			l.event(now, cloud, "", "", "image_copied", fmt.Sprintf("%s copied from %s", t.Ref, t.Source))
			return
		}
		f := l.images.failures[key]
		f.Count++
		f.LastAt, f.Error = now, r.Error
		l.images.failures[key] = f
		h.m.imageCopies.WithLabelValues(cloud, "failed").Inc()
		l.event(now, cloud, "", "", "image_copy_failed", fmt.Sprintf("%s from %s: %s: %s", t.Ref, t.Source, r.Class, r.Error))
		log.WithFields(logrus.Fields{"image": t.Ref.Name, "class": r.Class, "failures": f.Count}).Warn("image copy failed: " + r.Error)
	case protocol.CmdImageDelete:
		d := cmd.ImageDelete
		for _, ref := range r.Refused {
			l.event(now, cloud, "", "", "image_delete_refused", ref.Reason)
		}
		if !r.OK && r.Class != protocol.ErrClassRefused {
			log.WithFields(logrus.Fields{"image": d.Name, "class": r.Class}).Warn("image delete failed: " + r.Error)
		}
	}
}

// publishWants shows an admin's change of the matrix at once (its cells
// follow at the next cycle).
func (l *loop) publishWants() {
	st := l.h.Images()
	st.Wants = l.wants()
	l.h.imageStatus.Store(&st)
}

// Images returns the image distribution's last state.
func (h *Hub) Images() ImageStatus {
	if st := h.imageStatus.Load(); st != nil {
		return *st
	}
	return ImageStatus{}
}

// errNotWanted is returned when unwanting an image the API never wanted.
var errNotWanted = errors.New("not wanted through the API")

// WantImage adds sites to an image's row of the desired matrix (durable
// when it returns). Wanting a site again clears its "deleted by hand" mark,
// so the image is copied there again.
func (h *Hub) WantImage(ctx context.Context, name, hash string, sites []string, by string) error {
	w, err := parseWant(name, hash, sites)
	if err != nil {
		return err
	}
	return h.admin(ctx, func(l *loop, now time.Time) error {
		for _, cw := range l.h.cfg.Images.Wants {
			if cw.Name == name {
				return fmt.Errorf("image %s is wanted by the hub config: change it there", name)
			}
		}
		prev, ok := l.st.ImageWants[name]
		ok = ok && prev.From == "api"
		if ok && prev.Ref != w.Ref {
			return fmt.Errorf("image %s is already wanted with %s:%s: unwant it from every site first", name, prev.Ref.Algo, prev.Ref.Hex)
		}
		if ok {
			merged := slices.Concat(prev.Sites, w.Sites)
			slices.Sort(merged)
			w.Sites = slices.Compact(merged)
			w.Seen = maps.Clone(prev.Seen)
			for _, s := range sites {
				delete(w.Seen, s)
			}
		}
		w.From = "api"
		l.tx.PutImageWant(w)
		l.publishWants()
		l.event(now, "", "", "", "image_want", fmt.Sprintf("%s wanted in %s by %s", w.Ref, strings.Join(sites, ","), by))
		return nil
	})
}

// UnwantImage removes sites from an image's row (all sites: none given).
// Canopy's copies there are then deleted unless servers use them.
func (h *Hub) UnwantImage(ctx context.Context, name string, sites []string, by string) error {
	return h.admin(ctx, func(l *loop, now time.Time) error {
		for _, cw := range l.h.cfg.Images.Wants {
			if cw.Name == name {
				return fmt.Errorf("image %s is wanted by the hub config: change it there", name)
			}
		}
		w, ok := l.st.ImageWants[name]
		if !ok || w.From != "api" {
			return fmt.Errorf("image %s: %w", name, errNotWanted)
		}
		if len(sites) == 0 {
			sites = w.Sites
		}
		w.Sites = slices.DeleteFunc(slices.Clone(w.Sites), func(s string) bool { return slices.Contains(sites, s) })
		w.Seen = maps.Clone(w.Seen)
		for _, s := range sites {
			delete(w.Seen, s)
		}
		if len(w.Sites) == 0 {
			l.tx.DropImageWant(name)
		} else {
			l.tx.PutImageWant(w)
		}
		l.publishWants()
		l.event(now, "", "", "", "image_unwant", fmt.Sprintf("%s unwanted in %s by %s", w.Ref, strings.Join(sites, ","), by))
		return nil
	})
}

// imageMetrics are the hub's canopy_image_* metrics.
type imageMetrics struct {
	imageCopies    *prometheus.CounterVec
	imageBytes     *prometheus.GaugeVec
	imageInFlight  *prometheus.GaugeVec
	imageCells     *prometheus.GaugeVec
	imageConflicts *prometheus.GaugeVec
	imageFailing   *prometheus.GaugeVec
}

func newImageMetrics(reg *prometheus.Registry) imageMetrics {
	m := imageMetrics{
		imageCopies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_image_copies_total",
			Help: "Image copies finished, by destination site and result (ok, failed)."}, []string{"site", "result"}),
		imageBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "canopy_image_copy_bytes",
			Help: "Bytes streamed so far by the copies under way, by destination site."}, []string{"site"}),
		imageInFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "canopy_image_copies_in_flight",
			Help: "Image copies under way, by destination site."}, []string{"site"}),
		imageCells: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "canopy_image_matrix_cells",
			Help: "Cells of the desired image matrix, by site and state (present, copying, starting, queued, backoff, refused, conflict, no_source, unknown)."},
			[]string{"site", "state"}),
		imageConflicts: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "canopy_image_conflicts",
			Help: "Image conflicts shown (never fixed by Canopy), by kind."}, []string{"kind"}),
		imageFailing: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "canopy_image_copy_failures_in_a_row",
			Help: "Failed copies in a row of one image into one site (0 once one succeeds), by site and image."}, []string{"site", "image"}),
	}
	reg.MustRegister(m.imageCopies, m.imageBytes, m.imageInFlight, m.imageCells, m.imageConflicts, m.imageFailing)
	return m
}

// observeImages sets the image gauges from a status.
func (m imageMetrics) observeImages(st ImageStatus) {
	m.imageBytes.Reset()
	m.imageInFlight.Reset()
	for _, t := range st.Transfers {
		m.imageInFlight.WithLabelValues(t.Dest).Inc()
		m.imageBytes.WithLabelValues(t.Dest).Add(float64(t.Bytes))
	}
	m.imageCells.Reset()
	for _, c := range st.Cells {
		m.imageCells.WithLabelValues(c.Site, string(c.State)).Inc()
	}
	m.imageConflicts.Reset()
	for _, k := range []imageplan.ConflictKind{imageplan.ConflictNameContents, imageplan.ConflictContentsNames, imageplan.ConflictDuplicate, imageplan.ConflictDeletedByHand} {
		m.imageConflicts.WithLabelValues(string(k))
	}
	for _, c := range st.Conflicts {
		m.imageConflicts.WithLabelValues(string(c.Kind)).Inc()
	}
	m.imageFailing.Reset()
	for k, f := range st.Failures {
		parts := strings.SplitN(k, "|", 3)
		if len(parts) == 3 {
			m.imageFailing.WithLabelValues(parts[0], parts[1]).Set(float64(f.Count))
		}
	}
}

// ImageWantRequest is the body of POST /api/v1/images/want and /unwant.
type ImageWantRequest struct {
	Name string `json:"name"`
	// Hash is "algo:hex"; unwant ignores it.
	Hash  string   `json:"hash,omitempty"`
	Sites []string `json:"sites"`
}

// imageRoutes adds the image API to mux for one channel: the matrix for
// every reader, want and unwant for admins only.
func (h *Hub) imageRoutes(mux *http.ServeMux, ch channel) {
	mux.HandleFunc("GET /api/v1/images", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, h.Images()) })
	mux.HandleFunc("POST /api/v1/images/want", h.adminOnly(ch, h.imageWantHandler(true)))
	mux.HandleFunc("POST /api/v1/images/unwant", h.adminOnly(ch, h.imageWantHandler(false)))
}

// imageWantHandler serves want (true) and unwant (false).
func (h *Hub) imageWantHandler(want bool) func(w http.ResponseWriter, r *http.Request, by string) {
	return func(w http.ResponseWriter, r *http.Request, by string) {
		var req ImageWantRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			h.m.apiRefused.WithLabelValues("bad_body").Inc()
			http.Error(w, "bad request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		var err error
		if want {
			err = h.WantImage(ctx, req.Name, req.Hash, req.Sites, by)
		} else {
			for _, s := range req.Sites {
				if verr := pki.ValidSite(s); verr != nil {
					http.Error(w, verr.Error(), http.StatusBadRequest)
					return
				}
			}
			err = h.UnwantImage(ctx, req.Name, req.Sites, by)
		}
		switch {
		case errors.Is(err, errNotWanted):
			http.Error(w, err.Error(), http.StatusNotFound)
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		case err != nil:
			h.m.apiRefused.WithLabelValues("bad_image_want").Inc()
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			writeJSON(w, map[string]any{"name": req.Name, "wanted": want, "sites": req.Sites})
		}
	}
}

// holdForImages marks, on each cloud, the images the matrix wants there
// that are not present yet (missing, copying, refused...): the planner
// boots no VM type needing one of them there, and says why.
func (l *loop) holdForImages(clouds []planner.Cloud) {
	notReady := map[string]map[string]string{}
	for _, c := range l.imageCells {
		if c.State == imageplan.CellPresent {
			continue
		}
		if notReady[c.Site] == nil {
			notReady[c.Site] = map[string]string{}
		}
		why := fmt.Sprintf("image %s is %s on %s", c.Ref.Name, c.State, c.Site)
		if c.Reason != "" {
			why += ": " + c.Reason
		}
		notReady[c.Site][c.Ref.Name] = why
	}
	for i := range clouds {
		if m := notReady[clouds[i].Site]; m != nil {
			clouds[i].ImagesNotReady = m
		}
	}
}
