package planner

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"
)

// A quota tree. Groups form a tree through Group.Parent. Every quota is
// turned into bounds (quotaBound) on the sum of some groups' usage:
//
//   - a group that does not borrow (a top group, or one with NoBorrow)
//     with Caps: its subtree (itself and every group below it) within its
//     Caps;
//   - a parent whose subgroups may borrow, per resource: the subtrees of
//     its subgroups with a quota on that resource within the sum of those
//     quotas. A subgroup goes past its own quota only by what its
//     siblings leave unused, and together they never take more than their
//     quotas add up to.
//
// A boot needs room in every bound its group belongs to; a bound exceeded
// (a quota lowered below use) blocks boots at once and sheds VMs by the
// over-quota rule. A flat configuration (no Parent) gives one bound per
// capped group over its own VMs: the group caps of old.

// quotaBound bounds the sum of the usage of some groups.
type quotaBound struct {
	// owner is the group whose quota this is; for a pool, the parent.
	owner *groupState
	// pool is set for a parent's pool of borrowing subgroups; dim is then
	// the one resource bounded.
	pool bool
	dim  int
	// limit holds the bound per resource; zero fields mean none.
	limit              Caps
	all, staying, room Usage
	vms                []int32
	since              time.Time
	overQuota          bool
	overWhy            string
	members            []*groupState
}

// linkTree sets every configured group's parent, creating parents that
// have no settings, and ignores a parent that would close a cycle (groups
// are linked in name order, so the same groups always give the same tree).
func (p *planner) linkTree() {
	names := slices.Sorted(maps.Keys(p.groups))
	for _, name := range names {
		if parent := p.groups[name].g.Parent; parent != "" && parent != name {
			p.group(parent)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(p.groups)) {
		g := p.groups[name]
		if g.g.Parent == "" || g.g.Parent == name {
			continue
		}
		par := p.groups[g.g.Parent]
		// A cycle: g is already an ancestor of par. The walk is bounded
		// by the number of groups, as the tree built so far has none.
		cycle := false
		for a, n := par, 0; a != nil && n <= len(p.groups); a, n = a.parent, n+1 {
			if a == g {
				cycle = true
				break
			}
		}
		if cycle {
			continue
		}
		g.parent = par
		par.children = append(par.children, g)
	}
}

// borrows reports whether the group may go past its own quota.
func (g *groupState) borrows() bool { return g.parent != nil && !g.g.NoBorrow }

// buildBounds turns the groups' quotas into bounds and files every group
// under the bounds it belongs to; the groups' usage (all) must be summed.
func (p *planner) buildBounds() {
	// Top of the tree first, so over-quota shedding meets a parent's
	// bound before its subgroups'.
	depth := func(g *groupState) int {
		n := 0
		for x := g.parent; x != nil && n <= len(p.groups); x = x.parent {
			n++
		}
		return n
	}
	order := slices.Clone(p.groupOrder)
	slices.SortStableFunc(order, func(a, b *groupState) int { return cmp.Compare(depth(a), depth(b)) })
	for _, g := range order {
		if !g.borrows() && g.g.Caps != (Caps{}) {
			p.bounds = append(p.bounds, quotaBound{owner: g, limit: g.g.Caps, since: g.g.OverQuotaSince})
			g.ownBound = int32(len(p.bounds) - 1)
		}
		for dim := range numDims {
			sum, borrowing := 0, false
			for _, c := range g.children {
				if v := capsGet(c.g.Caps, dim); v > 0 {
					sum += v
					borrowing = borrowing || c.borrows()
				}
			}
			if borrowing {
				var limit Caps
				capsSet(&limit, dim, sum)
				p.bounds = append(p.bounds, quotaBound{owner: g, pool: true, dim: dim, limit: limit, since: g.g.OverQuotaSince})
				g.poolBound[dim] = int32(len(p.bounds) - 1)
			}
		}
	}
	// A group belongs to its own bound, its ancestors' bounds, and the
	// pool of every parent on its way up below which it has a quota.
	for _, g := range p.groupOrder {
		for x, n := g, 0; x != nil && n <= len(p.groups); x, n = x.parent, n+1 {
			if x.ownBound >= 0 {
				g.bounds = append(g.bounds, x.ownBound)
			}
			if par := x.parent; par != nil {
				for dim := range numDims {
					if bi := par.poolBound[dim]; bi >= 0 && capsGet(x.g.Caps, dim) > 0 {
						g.bounds = append(g.bounds, bi)
					}
				}
			}
		}
		for _, bi := range g.bounds {
			b := &p.bounds[bi]
			b.all.add(g.all)
			b.members = append(b.members, g)
			b.vms = append(b.vms, g.vms...)
		}
	}
}

// boundDeficit is by how much a bound's staying usage exceeds it.
func boundDeficit(b *quotaBound) (Usage, string) {
	return groupDeficit(b.staying, b.limit)
}

// boundName says what a bound is, for reasons.
func (b *quotaBound) name() string {
	if b.pool {
		return fmt.Sprintf("subgroups of %s (pooled %s quota %d)", b.owner.name, dimNames[b.dim], capsGet(b.limit, b.dim))
	}
	if len(b.owner.children) > 0 {
		return fmt.Sprintf("group %s and its subgroups", b.owner.name)
	}
	return "group " + b.owner.name
}
