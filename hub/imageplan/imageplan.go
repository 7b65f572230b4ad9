// Package imageplan is the image distribution planner: a pure function
// from the desired image × site matrix, what each site's Glance holds, the
// copies under way and their failures, to the copies to start, the images
// to delete, the matrix's cells and the conflicts to show. It decides;
// the hub's control loop carries the decisions out through the agents.
//
// Rules:
//   - an image is named by its name and one digest (images.Ref); a site
//     holds it when an active, visible image there has that name and digest;
//   - a copy goes to a site with fresh evidence only, from a site that holds
//     the bytes (by digest), at most MaxPerDest copies into and MaxPerSource
//     out of any site at once, after the backoff of earlier failures, and
//     only within the site's capacity quota for Canopy's images;
//   - conflicts (a name with other contents, contents under other names,
//     duplicates in one site, a wanted image deleted by hand) are shown and
//     block the copies they concern, never fixed;
//   - only images Canopy copied in (canopy_hub = this hub) are ever deleted,
//     only on fresh evidence, never one a server uses, never one a copy
//     reads from.
package imageplan

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/canopy-grid/canopy/images"
)

// Want is one row of the desired matrix: these bytes, under this name, in
// these sites.
type Want struct {
	Ref   images.Ref `json:"ref"`
	Sites []string   `json:"sites"`
	// From says where the row comes from: "config" or "api".
	From string `json:"from,omitempty"`
	// Seen is when each site was first seen holding the image since it was
	// wanted there (durable): a site seen holding it that no longer does
	// had it deleted by hand.
	Seen map[string]time.Time `json:"seen,omitempty"`
}

// Site is what one site's agent last reported.
type Site struct {
	// Fresh: the inventory is fresh evidence (agent connected, recent).
	Fresh  bool
	Images []images.Image
	// InUse counts, by image id, the servers (Canopy's and foreign) booted
	// from it.
	InUse map[string]int
	// QuotaBytes caps the total size of Canopy's images in the site; 0:
	// no cap.
	QuotaBytes int64
}

// Transfer is a copy under way.
type Transfer struct {
	ID     string     `json:"id"`
	Ref    images.Ref `json:"ref"`
	Dest   string     `json:"dest"`
	Source string     `json:"source"`
	Total  int64      `json:"total"`
}

// Failure is the failure record of copies of one Ref into one site.
type Failure struct {
	Count  int       `json:"count"`
	LastAt time.Time `json:"last_at"`
	Error  string    `json:"error,omitempty"`
}

// Config bounds the transfers and their retries.
type Config struct {
	// MaxPerDest and MaxPerSource bound concurrent copies into and out of
	// one site (default 2 each).
	MaxPerDest   int `yaml:"max_per_dest"`
	MaxPerSource int `yaml:"max_per_source"`
	// BackoffMin and BackoffMax bound the wait after a failed copy; it
	// doubles with every failure in a row (defaults 1 min, 1 h).
	BackoffMin time.Duration `yaml:"backoff_min"`
	BackoffMax time.Duration `yaml:"backoff_max"`
}

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	if c.MaxPerDest <= 0 {
		c.MaxPerDest = 2
	}
	if c.MaxPerSource <= 0 {
		c.MaxPerSource = 2
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = time.Minute
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = time.Hour
	}
	c.BackoffMax = max(c.BackoffMax, c.BackoffMin)
	return c
}

// Backoff is how long to wait after n failures in a row.
func (c Config) Backoff(n int) time.Duration {
	d := c.BackoffMin
	for i := 1; i < n && d < c.BackoffMax; i++ {
		d *= 2
	}
	return min(d, c.BackoffMax)
}

// Input is everything Decide looks at.
type Input struct {
	Now time.Time
	// HubID identifies Canopy's own images (images.Image.Hub).
	HubID    string
	Wants    []Want
	Sites    map[string]Site
	InFlight []Transfer
	// Failures by FailureKey(site, ref).
	Failures map[string]Failure
	Config   Config
}

// FailureKey keys Input.Failures.
func FailureKey(site string, r images.Ref) string {
	return site + "|" + r.Name + "|" + strings.ToLower(r.Algo) + ":" + strings.ToLower(r.Hex)
}

// CellState is the state of one cell of the matrix.
type CellState string

// Cell states.
const (
	CellPresent  CellState = "present"   // the site holds it
	CellCopying  CellState = "copying"   // a copy into the site is under way
	CellStarting CellState = "starting"  // a copy starts this cycle
	CellQueued   CellState = "queued"    // waiting for a transfer slot
	CellBackoff  CellState = "backoff"   // waiting after failed copies
	CellRefused  CellState = "refused"   // over the site's capacity quota
	CellConflict CellState = "conflict"  // blocked by a conflict (see Conflicts)
	CellNoSource CellState = "no_source" // no site with fresh evidence holds the bytes
	CellUnknown  CellState = "unknown"   // the site gives no fresh evidence
)

// Cell is one (image, site) of the desired matrix.
type Cell struct {
	Ref    images.Ref `json:"ref"`
	Site   string     `json:"site"`
	State  CellState  `json:"state"`
	Reason string     `json:"reason,omitempty"`
	// ImageID is the site's image when present.
	ImageID string `json:"image_id,omitempty"`
}

// Copy is a copy to start.
type Copy struct {
	Ref    images.Ref `json:"ref"`
	Dest   string     `json:"dest"`
	Source string     `json:"source"`
	// Image is the source's image (id, size, formats, checksums).
	Image images.Image `json:"image"`
}

// Delete is one of Canopy's images to delete.
type Delete struct {
	Site   string       `json:"site"`
	Image  images.Image `json:"image"`
	Reason string       `json:"reason"`
}

// Kept is one of Canopy's unwanted images not deleted, and why.
type Kept struct {
	Site   string       `json:"site"`
	Image  images.Image `json:"image"`
	Reason string       `json:"reason"`
}

// ConflictKind names a kind of conflict.
type ConflictKind string

// Conflict kinds.
const (
	// ConflictNameContents: one name, different contents (across sites).
	ConflictNameContents ConflictKind = "same_name_different_contents"
	// ConflictContentsNames: the same contents under different names.
	ConflictContentsNames ConflictKind = "same_contents_different_names"
	// ConflictDuplicate: one name more than once in one site.
	ConflictDuplicate ConflictKind = "duplicate_in_site"
	// ConflictDeletedByHand: a wanted image the site held is gone, and no
	// copy of Canopy's removed it.
	ConflictDeletedByHand ConflictKind = "wanted_image_deleted"
)

// Conflict is one conflict, with the images concerned.
type Conflict struct {
	Kind   ConflictKind `json:"kind"`
	Name   string       `json:"name"`
	Detail string       `json:"detail"`
	// Where lists "site:image id" of the images concerned.
	Where []string `json:"where,omitempty"`
}

// Plan is Decide's answer.
type Plan struct {
	Copies    []Copy     `json:"copies,omitempty"`
	Deletes   []Delete   `json:"deletes,omitempty"`
	Kept      []Kept     `json:"kept,omitempty"`
	Cells     []Cell     `json:"cells"`
	Conflicts []Conflict `json:"conflicts,omitempty"`
	// Seen are cells seen present for the first time: the caller records
	// them in the wants (Want.Seen).
	Seen []Cell `json:"-"`
}

// contentKey is an image's strongest digest, "algo:hex"; "" when it has none.
func contentKey(im images.Image) string {
	for _, a := range []string{"sha512", "sha256", "md5"} {
		if d := im.Digest(a); d != "" {
			return a + ":" + d
		}
	}
	return ""
}

// usable: active and not hidden (a hidden image is a copy being verified).
func usable(im images.Image) bool { return im.Status == images.StatusActive && !im.Hidden }

// holds reports the site's usable image of r's name and digest.
func holds(s Site, r images.Ref) (images.Image, bool) {
	for _, im := range s.Images {
		if usable(im) && im.Name == r.Name && r.Matches(im) {
			return im, true
		}
	}
	return images.Image{}, false
}

// Decide plans one round of image distribution.
func Decide(in Input) Plan {
	cfg := in.Config.WithDefaults()
	var p Plan
	siteNames := slices.Sorted(maps.Keys(in.Sites))
	p.Conflicts = conflicts(in, siteNames)
	blockedName := map[string]string{} // site|name -> why
	for _, c := range p.Conflicts {
		if c.Kind == ConflictDuplicate {
			for _, w := range c.Where {
				site, _, _ := strings.Cut(w, ":")
				blockedName[site+"|"+c.Name] = c.Detail
			}
		}
	}

	perDest, perSource := map[string]int{}, map[string]int{}
	inflight := map[string]Transfer{} // dest|ref
	reserved := map[string]int64{}    // dest -> bytes of copies under way
	sourcing := map[string]bool{}     // source image in use as source: site|name
	for _, t := range in.InFlight {
		perDest[t.Dest]++
		perSource[t.Source]++
		inflight[FailureKey(t.Dest, t.Ref)] = t
		reserved[t.Dest] += t.Total
		sourcing[t.Source+"|"+t.Ref.Name+"|"+strings.ToLower(t.Ref.Hex)] = true
	}
	used := map[string]int64{} // Canopy's bytes per site
	for _, name := range siteNames {
		for _, im := range in.Sites[name].Images {
			if in.HubID != "" && im.Hub == in.HubID && im.Status != images.StatusDeleted {
				used[name] += im.SizeBytes
			}
		}
	}

	wants := slices.Clone(in.Wants)
	slices.SortFunc(wants, func(a, b Want) int { return cmp.Compare(a.Ref.Name, b.Ref.Name) })
	for _, w := range wants {
		for _, site := range slices.Sorted(slices.Values(w.Sites)) {
			cell := Cell{Ref: w.Ref, Site: site}
			s, known := in.Sites[site]
			key := FailureKey(site, w.Ref)
			switch {
			case !known || !s.Fresh:
				cell.State, cell.Reason = CellUnknown, "no fresh inventory from the site"
				if t, ok := inflight[key]; ok {
					cell.State, cell.Reason = CellCopying, "copy "+t.ID+" from "+t.Source
				}
			default:
				cell = decideCell(in, cfg, w, site, s, cell, &p, inflight, perDest, perSource, reserved, used, blockedName)
			}
			p.Cells = append(p.Cells, cell)
		}
	}

	// Deletions: Canopy's own images nobody wants where they are.
	wantedAt := map[string]bool{} // site|name|digest
	for _, w := range in.Wants {
		for _, s := range w.Sites {
			wantedAt[s+"|"+w.Ref.Name+"|"+strings.ToLower(w.Ref.Hex)] = true
		}
	}
	for _, site := range siteNames {
		s := in.Sites[site]
		if !s.Fresh || in.HubID == "" {
			continue
		}
		for _, im := range s.Images {
			if im.Hub != in.HubID || im.Status != images.StatusActive || im.Hidden {
				continue
			}
			if slices.ContainsFunc(in.Wants, func(w Want) bool {
				return slices.Contains(w.Sites, site) && w.Ref.Name == im.Name && w.Ref.Matches(im)
			}) {
				continue
			}
			d := Delete{Site: site, Image: im, Reason: fmt.Sprintf("image %s is not wanted in site %s", im.Name, site)}
			srcKey := site + "|" + im.Name + "|"
			switch n := s.InUse[im.ID]; {
			case n > 0:
				p.Kept = append(p.Kept, Kept{Site: site, Image: im, Reason: fmt.Sprintf("unwanted but used by %d server(s)", n)})
			case anyPrefix(sourcing, srcKey):
				p.Kept = append(p.Kept, Kept{Site: site, Image: im, Reason: "unwanted but a copy is reading it"})
			default:
				p.Deletes = append(p.Deletes, d)
			}
		}
	}
	return p
}

func anyPrefix(m map[string]bool, prefix string) bool {
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// decideCell decides one wanted cell of a site with fresh evidence.
func decideCell(in Input, cfg Config, w Want, site string, s Site, cell Cell, p *Plan,
	inflight map[string]Transfer, perDest, perSource map[string]int, reserved, used map[string]int64,
	blockedName map[string]string) Cell {
	key := FailureKey(site, w.Ref)
	if im, ok := holds(s, w.Ref); ok {
		cell.State, cell.ImageID = CellPresent, im.ID
		if _, seen := w.Seen[site]; !seen {
			p.Seen = append(p.Seen, cell)
		}
		return cell
	}
	if t, ok := inflight[key]; ok {
		cell.State, cell.Reason = CellCopying, "copy "+t.ID+" from "+t.Source
		return cell
	}
	if why, ok := blockedName[site+"|"+w.Ref.Name]; ok {
		cell.State, cell.Reason = CellConflict, why
		return cell
	}
	for _, im := range s.Images {
		if usable(im) && im.Name == w.Ref.Name && !w.Ref.Matches(im) {
			cell.State = CellConflict
			cell.Reason = fmt.Sprintf("site %s holds image %s (%s) with other contents (%s)", site, im.Name, im.ID, contentKey(im))
			return cell
		}
	}
	if at, seen := w.Seen[site]; seen {
		cell.State = CellConflict
		cell.Reason = fmt.Sprintf("site %s held %s (seen %s) and no longer does: deleted by hand? want it again to copy it", site, w.Ref, at.UTC().Format(time.RFC3339))
		return cell
	}
	if f, ok := in.Failures[key]; ok && f.Count > 0 {
		if next := f.LastAt.Add(cfg.Backoff(f.Count)); in.Now.Before(next) {
			cell.State = CellBackoff
			cell.Reason = fmt.Sprintf("%d failed copies, next try at %s: %s", f.Count, next.UTC().Format(time.RFC3339), f.Error)
			return cell
		}
	}
	// A source: a fresh site holding the bytes (any name), fewest copies out.
	var src string
	var srcIm images.Image
	for _, name := range slices.Sorted(maps.Keys(in.Sites)) {
		o := in.Sites[name]
		if name == site || !o.Fresh {
			continue
		}
		for _, im := range o.Images {
			if usable(im) && w.Ref.Matches(im) {
				if src == "" || perSource[name] < perSource[src] || im.Name == w.Ref.Name && srcIm.Name != w.Ref.Name && perSource[name] == perSource[src] {
					src, srcIm = name, im
				}
				break
			}
		}
	}
	if src == "" {
		cell.State, cell.Reason = CellNoSource, "no site with fresh evidence holds "+w.Ref.String()
		return cell
	}
	if q := s.QuotaBytes; q > 0 {
		after := used[site] + reserved[site] + srcIm.SizeBytes
		if after > q {
			cell.State = CellRefused
			cell.Reason = fmt.Sprintf("site %s: copying image %s (%d bytes) would bring Canopy's images to %d bytes, over the site's quota of %d bytes (%d held, %d being copied)",
				site, w.Ref.Name, srcIm.SizeBytes, after, q, used[site], reserved[site])
			return cell
		}
	}
	if perDest[site] >= cfg.MaxPerDest {
		cell.State, cell.Reason = CellQueued, fmt.Sprintf("%d copies into %s under way (max_per_dest %d)", perDest[site], site, cfg.MaxPerDest)
		return cell
	}
	if perSource[src] >= cfg.MaxPerSource {
		cell.State, cell.Reason = CellQueued, fmt.Sprintf("%d copies out of %s under way (max_per_source %d)", perSource[src], src, cfg.MaxPerSource)
		return cell
	}
	perDest[site]++
	perSource[src]++
	reserved[site] += srcIm.SizeBytes
	p.Copies = append(p.Copies, Copy{Ref: w.Ref, Dest: site, Source: src, Image: srcIm})
	cell.State, cell.Reason = CellStarting, "copy from "+src
	return cell
}

// conflicts finds the four kinds among usable images (and the wants).
func conflicts(in Input, siteNames []string) []Conflict {
	var out []Conflict
	byName := map[string]map[string][]string{}    // name -> content -> where
	byContent := map[string]map[string][]string{} // content -> name -> where
	for _, site := range siteNames {
		s := in.Sites[site]
		if !s.Fresh {
			continue
		}
		count := map[string][]string{}
		for _, im := range s.Images {
			if !usable(im) {
				continue
			}
			where := site + ":" + im.ID
			count[im.Name] = append(count[im.Name], where)
			ck := contentKey(im)
			if ck == "" {
				continue
			}
			if byName[im.Name] == nil {
				byName[im.Name] = map[string][]string{}
			}
			byName[im.Name][ck] = append(byName[im.Name][ck], where)
			if byContent[ck] == nil {
				byContent[ck] = map[string][]string{}
			}
			byContent[ck][im.Name] = append(byContent[ck][im.Name], where)
		}
		for _, name := range slices.Sorted(maps.Keys(count)) {
			if len(count[name]) > 1 {
				out = append(out, Conflict{Kind: ConflictDuplicate, Name: name, Where: count[name],
					Detail: fmt.Sprintf("site %s holds %d active images named %s", site, len(count[name]), name)})
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		if len(byName[name]) < 2 {
			continue
		}
		var where []string
		for _, ck := range slices.Sorted(maps.Keys(byName[name])) {
			where = append(where, byName[name][ck]...)
		}
		out = append(out, Conflict{Kind: ConflictNameContents, Name: name, Where: where,
			Detail: fmt.Sprintf("%s has %d different contents: %s", name, len(byName[name]), strings.Join(slices.Sorted(maps.Keys(byName[name])), ", "))})
	}
	for _, ck := range slices.Sorted(maps.Keys(byContent)) {
		if len(byContent[ck]) < 2 {
			continue
		}
		names := slices.Sorted(maps.Keys(byContent[ck]))
		var where []string
		for _, n := range names {
			where = append(where, byContent[ck][n]...)
		}
		out = append(out, Conflict{Kind: ConflictContentsNames, Name: names[0], Where: where,
			Detail: fmt.Sprintf("the same contents (%s) are named %s", ck, strings.Join(names, ", "))})
	}
	for _, w := range in.Wants {
		for _, site := range w.Sites {
			s, ok := in.Sites[site]
			at, seen := w.Seen[site]
			if !ok || !s.Fresh || !seen {
				continue
			}
			if _, has := holds(s, w.Ref); has {
				continue
			}
			out = append(out, Conflict{Kind: ConflictDeletedByHand, Name: w.Ref.Name, Where: []string{site + ":"},
				Detail: fmt.Sprintf("site %s held %s (seen %s) and no longer does", site, w.Ref, at.UTC().Format(time.RFC3339))})
		}
	}
	return out
}
