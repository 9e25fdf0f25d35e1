package envconfig

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/devcontainer"
)

// InstalledFeature is one feature of an environment, as its status
// reports it (DevcontainerState.Features: persisted in the state file).
type InstalledFeature struct {
	ID      string            `json:"id"`                // as written in devcontainer.json (or a dependsOn)
	Version string            `json:"version,omitempty"` // devcontainer-feature.json's
	Digest  string            `json:"digest,omitempty"`  // of the manifest, tarball or folder
	Options map[string]string `json:"options,omitempty"` // as given
}

// featureAsks is what a feature's devcontainer-feature.json may ask of the
// container that cove can refuse.
type featureAsks struct {
	Privileged  bool                 `json:"privileged"`
	CapAdd      []string             `json:"capAdd"`
	SecurityOpt []string             `json:"securityOpt"`
	Mounts      []devcontainer.Mount `json:"mounts"`
}

// featureRefusal is one thing a feature asks for that the environment's
// class does not allow.
type featureRefusal struct {
	asks    string                        // what, as the feature writes it: `privileged: true`
	why     string                        // why cove refuses it
	remedy  string                        // what to do besides removing the feature
	granted func(devcontainer.Allow) bool // whether a class allowing this grants it
}

// CheckFeatures refuses, before the configuration is merged, what a
// feature's own metadata asks for that allow does not permit (privileged
// mode, capabilities, security options, the Docker socket or a host
// path), as devcontainer refusals (one user error listing them all): each
// is located at the feature's entry in devcontainer.json (file,
// features["id"], line:column; for a dependency, at the entries that pull
// it in) and names the feature as written, what it asks for, why cove
// refuses it, which of classes would allow it and what to do instead.
// What this check leaves alone (a malformed mount, say) is the merged
// configuration's check's to report.
func CheckFeatures(cfg *devcontainer.Config, features []Feature, allow devcontainer.Allow, classes []*Class) error {
	if cfg == nil {
		return nil
	}
	top := map[string]bool{}
	for _, f := range cfg.Features {
		top[f.ID] = true
	}
	requiredBy := map[string][]string{}
	for _, f := range features {
		requiredBy[f.ID] = f.RequiredBy
	}
	var rs devcontainer.Refusals
	for _, f := range features {
		var a featureAsks
		if err := json.Unmarshal(f.Metadata, &a); err != nil {
			return fmt.Errorf("feature %s: metadata: %w", f.ID, err)
		}
		refs := featureRefusals(a, allow)
		if len(refs) == 0 {
			continue
		}
		// Where devcontainer.json asks for the feature: its own entry, or
		// the entries of the features that (transitively) depend on it.
		var locs []devcontainer.Location
		var roots []string
		for _, id := range rootsOf(f.ID, top, requiredBy) {
			locs = append(locs, cfg.Loc(fmt.Sprintf("features[%q]", id)))
			roots = append(roots, id)
		}
		if len(locs) == 0 {
			locs = []devcontainer.Location{{File: cfg.File(), Path: "features"}}
		}
		subject := fmt.Sprintf("feature %q", f.ID)
		remove := fmt.Sprintf("remove %q from \"features\"", f.ID)
		if !top[f.ID] {
			subject = fmt.Sprintf("feature %q, which %s depends on,", f.ID, quoteJoin(roots))
			remove = fmt.Sprintf("remove %s from \"features\"", quoteJoin(roots))
		}
		for _, r := range refs {
			rs.Add(devcontainer.Refusal{
				Key:       "feature:" + f.ID + ":" + r.asks,
				Locations: locs,
				Reason:    fmt.Sprintf("%s asks for %s in its devcontainer-feature.json: %s. %s", subject, r.asks, r.why, grantingClasses(classes, r.granted)),
				Remedy:    fixFeature(remove, r, classes),
			})
		}
	}
	return rs.Err(cfg.File())
}

// rootsOf are the features of devcontainer.json (top) that are id or
// depend on it, directly or through other features (requiredBy: who
// depends on whom), in the order found.
func rootsOf(id string, top map[string]bool, requiredBy map[string][]string) []string {
	var out []string
	seen := map[string]bool{}
	var walk func(string)
	walk = func(id string) {
		if seen[id] {
			return
		}
		seen[id] = true
		if top[id] {
			out = append(out, id)
		}
		for _, p := range requiredBy[id] {
			walk(p)
		}
	}
	walk(id)
	return out
}

// featureRefusals lists what a asks for that allow does not permit. It
// refuses no more than the merged configuration's check does.
func featureRefusals(a featureAsks, allow devcontainer.Allow) []featureRefusal {
	var out []featureRefusal
	if a.Privileged && !allow.Privileged {
		out = append(out, featureRefusal{
			asks:    "privileged: true",
			why:     "privileged mode gives the environment every capability and the host's devices, so root in the environment would be root on the runner",
			remedy:  "privileged mode",
			granted: func(al devcontainer.Allow) bool { return al.Privileged },
		})
	}
	var caps []string
	for _, c := range a.CapAdd {
		if n := normCap(c); !capAllowed(allow, n) && !slices.Contains(caps, n) {
			caps = append(caps, n)
		}
	}
	if len(caps) > 0 {
		allowed := "none"
		if len(allow.Capabilities) > 0 {
			allowed = strings.Join(allow.Capabilities, ", ")
		}
		out = append(out, featureRefusal{
			asks:   "capAdd: " + strings.Join(caps, ", "),
			why:    "a capability beyond those this runner grants (" + allowed + ") weakens the environment's isolation from the runner",
			remedy: "these capabilities",
			granted: func(al devcontainer.Allow) bool {
				return !slices.ContainsFunc(caps, func(c string) bool { return !capAllowed(al, c) })
			},
		})
	}
	for _, o := range a.SecurityOpt {
		k, v, _ := strings.Cut(strings.ReplaceAll(o, ":", "="), "=")
		unconfined := v == "unconfined" || k == "label" && v == "disable"
		switch {
		case k == "no-new-privileges":
		case unconfined && !allow.Privileged:
			out = append(out, featureRefusal{
				asks:    fmt.Sprintf("securityOpt: %q", o),
				why:     "it turns off the confinement (seccomp, AppArmor or SELinux) that keeps the environment apart from the runner",
				remedy:  "unconfined security options",
				granted: func(al devcontainer.Allow) bool { return al.Privileged },
			})
		case !unconfined:
			out = append(out, featureRefusal{
				asks:    fmt.Sprintf("securityOpt: %q", o),
				why:     "cove applies its own security profile; only no-new-privileges may be added",
				granted: func(devcontainer.Allow) bool { return false },
			})
		}
	}
	for i, m := range a.Mounts {
		what := fmt.Sprintf("a %s mount of %s at %s (mounts[%d])", m.Type, m.Source, m.Target, i)
		switch {
		case m.Problem != "":
			// Malformed: the merged configuration's check says why.
		case strings.Contains(m.Source, "docker.sock"):
			out = append(out, featureRefusal{
				asks:    what,
				why:     "the runner's Docker socket is root on the runner: cove never mounts it into an environment",
				granted: func(devcontainer.Allow) bool { return false }, // no class offers Docker in the environment yet
			})
		case m.Type == "bind" && strings.HasPrefix(m.Source, "/") && !strings.Contains(m.Source, "${"):
			out = append(out, featureRefusal{
				asks:    what,
				why:     "a feature cannot mount a path of the runner host into the environment",
				granted: func(devcontainer.Allow) bool { return false },
			})
		}
	}
	return out
}

// grantingClasses says which classes allow what granted tests.
func grantingClasses(classes []*Class, granted func(devcontainer.Allow) bool) string {
	ids := classesGranting(classes, granted)
	switch len(ids) {
	case 0:
		return "No class on this runner allows it."
	case 1:
		return fmt.Sprintf("Class %q allows it.", ids[0])
	}
	return "Classes that allow it: " + quoteJoin(ids) + "."
}

func classesGranting(classes []*Class, granted func(devcontainer.Allow) bool) []string {
	var ids []string
	for _, c := range classes {
		if c != nil && granted(c.Allow) {
			ids = append(ids, c.ID)
		}
	}
	return ids
}

// fixFeature is what to do instead of asking for r: remove says how to
// remove the feature.
func fixFeature(remove string, r featureRefusal, classes []*Class) string {
	if ids := classesGranting(classes, r.granted); len(ids) > 0 {
		return fmt.Sprintf("create the environment with `--class %s`, or %s", ids[0], remove)
	}
	if r.remedy != "" {
		return fmt.Sprintf("%s (or use a feature that does without it), or ask the runner's operator for a class that allows %s", remove, r.remedy)
	}
	return remove + " (or use a feature that does without it)"
}

func capAllowed(allow devcontainer.Allow, c string) bool {
	for _, x := range allow.Capabilities {
		if x = normCap(x); x == c || x == "ALL" {
			return true
		}
	}
	return false
}

func normCap(c string) string {
	return strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(c)), "CAP_")
}

// quoteJoin is `"a", "b"`.
func quoteJoin(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
