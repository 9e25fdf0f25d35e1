package features

import (
	"slices"
	"strings"

	"github.com/covedev/cove/internal/usererr"
)

// order sorts features for installation with the specification's round-based
// algorithm. In each round, the features whose hard (dependsOn) and soft
// (installsAfter, among the features present) dependencies are all installed
// are candidates; only the candidates with the highest priority are installed
// in that round, sorted stably. A feature named in overrideOrder at index i
// has priority len(overrideOrder)-i, others 0. A round without candidates
// means a cycle, reported with the features on it.
func order(all []*Feature, overrideOrder []string) ([]Feature, error) {
	prio := make(map[*Feature]int, len(all))
	for i, id := range overrideOrder {
		found := false
		for _, f := range all {
			if f.Ref.ID == id || resourceID(f.Ref.ID) == resourceID(id) {
				prio[f] = len(overrideOrder) - i
				found = true
			}
		}
		if !found {
			return nil, usererr.New("overrideFeatureInstallOrder names %q, which is not among the features", id)
		}
	}
	after := make(map[*Feature][]*Feature, len(all)) // hard and soft dependencies
	for _, f := range all {
		deps := slices.Clone(f.deps)
		for _, a := range f.Meta.InstallsAfter {
			for _, g := range all {
				if g != f && softMatch(a, g) && !slices.Contains(deps, g) {
					deps = append(deps, g)
				}
			}
		}
		after[f] = deps
	}

	installed := make(map[*Feature]bool, len(all))
	work := slices.Clone(all)
	var out []Feature
	for len(work) > 0 {
		var round []*Feature
		best := -1
		for _, f := range work {
			ready := true
			for _, d := range after[f] {
				if !installed[d] {
					ready = false
					break
				}
			}
			if !ready {
				continue
			}
			switch p := prio[f]; {
			case p > best:
				best, round = p, []*Feature{f}
			case p == best:
				round = append(round, f)
			}
		}
		if len(round) == 0 {
			return nil, usererr.New("features have a dependency cycle (each installs after the next): %s", strings.Join(findCycle(work, after, installed), " -> "))
		}
		slices.SortStableFunc(round, compareFeatures)
		for _, f := range round {
			installed[f] = true
			out = append(out, *f)
		}
		work = slices.DeleteFunc(work, func(f *Feature) bool { return installed[f] })
	}
	return out, nil
}

// softMatch reports whether an installsAfter entry names feature g: by its
// identifier without version, or by its id (or a legacy id) as the last
// path element of the entry.
func softMatch(entry string, g *Feature) bool {
	e := resourceID(entry)
	if e == resourceID(g.Ref.ID) {
		return true
	}
	base := e[strings.LastIndex(e, "/")+1:]
	legacy := slices.ContainsFunc(g.Meta.LegacyIDs, func(l string) bool { return strings.EqualFold(l, base) })
	if !strings.EqualFold(base, g.Meta.ID) && !legacy {
		return false
	}
	// Same id: it must also come from the same place (registry namespace),
	// unless either side is not an OCI reference.
	if kindOf(g.Ref.ID) != kindOCI || !strings.Contains(e, "/") {
		return true
	}
	gr := resourceID(g.Ref.ID)
	return e[:strings.LastIndex(e, "/")] == gr[:strings.LastIndex(gr, "/")]
}

// compareFeatures is the round's stable sort: identifier without version,
// then the full identifier (version), then options, then digest.
func compareFeatures(a, b *Feature) int {
	if c := strings.Compare(resourceID(a.Ref.ID), resourceID(b.Ref.ID)); c != 0 {
		return c
	}
	if c := strings.Compare(canonicalID(a.Ref.ID), canonicalID(b.Ref.ID)); c != 0 {
		return c
	}
	if c := slices.Compare(a.Env, b.Env); c != 0 {
		return c
	}
	return strings.Compare(a.Digest, b.Digest)
}

// findCycle returns the identifiers on one dependency cycle among the
// features not yet installed (the first repeated at the end).
func findCycle(work []*Feature, after map[*Feature][]*Feature, installed map[*Feature]bool) []string {
	state := map[*Feature]int{} // 1 on stack, 2 done
	var stack []*Feature
	var cycle []string
	var visit func(f *Feature) bool
	visit = func(f *Feature) bool {
		state[f] = 1
		stack = append(stack, f)
		for _, d := range after[f] {
			if installed[d] {
				continue
			}
			if state[d] == 1 {
				i := slices.Index(stack, d)
				for _, s := range stack[i:] {
					cycle = append(cycle, s.Ref.ID)
				}
				cycle = append(cycle, d.Ref.ID)
				return true
			}
			if state[d] == 0 && visit(d) {
				return true
			}
		}
		stack = stack[:len(stack)-1]
		state[f] = 2
		return false
	}
	for _, f := range work {
		if state[f] == 0 && visit(f) {
			return cycle
		}
	}
	ids := make([]string, len(work))
	for i, f := range work {
		ids[i] = f.Ref.ID
	}
	return ids
}
