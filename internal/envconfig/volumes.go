package envconfig

import (
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/covedev/cove/internal/guest"

	"github.com/covedev/cove/internal/usererr"
)

// volumeNameRE is what a named volume may be called (Docker's rule): a
// single path element that is never "." or "..".
var volumeNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// VolumeName is the name of the environment-local directory behind volume
// mount m (the runner keeps it as volumes/<name> in the environment's
// directory): m's source, or for an anonymous volume "anon-" and its
// target. A name that is not a plain volume name (a path, "..") is refused
// with a user error: it would name a directory of the runner's instead of
// a volume.
func VolumeName(m ConfigMount) (string, error) {
	name := m.Source
	if name == "" {
		name = "anon-" + strings.ReplaceAll(strings.Trim(m.Target, "/"), "/", "-")
	} else if !volumeNameRE.MatchString(name) {
		return "", usererr.New("volume name %q (mounted at %s) is not valid: use letters, digits, '_', '.' and '-', starting with a letter or digit", name, m.Target)
	}
	name = strings.ReplaceAll(name, "/", "-")
	const base = "/volumes"
	if name == "." || name == ".." || strings.IndexByte(name, 0) >= 0 || path.Dir(path.Join(base, name)) != base {
		return "", usererr.New("volume for %s: invalid name %q", m.Target, name)
	}
	return name, nil
}

// CheckVolumes refuses, before anything starts, volume mounts whose names
// VolumeName refuses: the dev container's and every sibling service's.
func CheckVolumes(r *Resolved) error {
	var all []ConfigMount
	if r.DC != nil {
		all = append(all, r.DC.Mounts...)
	}
	if r.Compose != nil {
		for _, s := range r.Compose.Services {
			all = append(all, s.Mounts...)
		}
	}
	for _, m := range all {
		if m.Type != "volume" {
			continue
		}
		if _, err := VolumeName(m); err != nil {
			return err
		}
	}
	return nil
}

// VolumeInfo is a volume of an environment as its status reports it.
type VolumeInfo struct {
	// Kind is "named", "anonymous", "tmpfs" or "bind" (a folder of the
	// workspace).
	Kind string
	// Name is a named volume's name, or a bind mount's source as the
	// environment sees it (under /workspaces).
	Name    string
	Target  string
	Service string // the Docker Compose service ("" for the dev container)
}

// Volumes lists what r mounts besides the workspace: the dev container's
// volumes, tmpfs and bind mounts (with Compose, reported against the dev
// service), then every sibling service's. workspace is the host directory
// mounted at /workspaces, so a bind's source is shown as the environment
// sees it, never as a runner path.
func Volumes(r *Resolved, workspace string) []VolumeInfo {
	if r == nil {
		return nil
	}
	var out []VolumeInfo
	add := func(service string, ms []ConfigMount) {
		for _, m := range ms {
			v := VolumeInfo{Target: m.Target, Service: service}
			switch {
			case m.Type == "tmpfs":
				v.Kind = "tmpfs"
			case m.Type == "bind":
				v.Kind, v.Name = "bind", guest.Workspaces
				if rel, err := filepath.Rel(workspace, m.Source); err == nil && filepath.IsLocal(rel) {
					v.Name = path.Join(guest.Workspaces, filepath.ToSlash(rel))
				}
			case m.Source == "" || strings.HasPrefix(m.Source, "anon-"):
				v.Kind = "anonymous"
			default:
				v.Kind, v.Name = "named", m.Source
			}
			out = append(out, v)
		}
	}
	if r.DC != nil {
		dev := ""
		if r.Compose != nil {
			dev = r.Compose.DevService
		}
		add(dev, r.DC.Mounts)
	}
	if r.Compose != nil {
		for _, s := range r.Compose.Services {
			add(s.Name, s.Mounts)
		}
	}
	return out
}
