package devcontainer

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
)

// Mount is an entry of "mounts" (devcontainer.json, image metadata or a
// feature's devcontainer-feature.json) or the parsed "workspaceMount", in
// either the Docker --mount string form or the object form.
type Mount struct {
	Type     string // "bind", "volume", "tmpfs"
	Source   string
	Target   string
	ReadOnly bool
	External bool
	// Orig is the string form as written, "" for the object form.
	Orig string
	// Problem says why the string form is not a valid --mount ("" if it
	// is); Check reports it with the mount's position.
	Problem string
}

// ignoredMountKeys are Docker --mount options cove accepts and does not
// apply (drivers, propagation and sizes are the runner's).
var ignoredMountKeys = map[string]bool{
	"consistency": true, "bind-propagation": true, "bind-nonrecursive": true, "bind-recursive": true,
	"volume-nocopy": true, "volume-driver": true, "volume-label": true, "volume-opt": true, "volume-subpath": true,
	"tmpfs-size": true, "tmpfs-mode": true,
}

// ParseMount parses the Docker --mount string form as the Docker CLI does:
// comma-separated fields, quoted where a value holds a comma
// (`"source=/a,b",target=/c` or `source="/a,b",target=/c`); keys type, source (src), target (dst,
// destination), readonly (ro; bare, or =true/false/1/0), and cove's
// external=true; the type defaults to volume. Docker's other options are
// accepted and ignored. The Mount is filled as far as s allows even when
// the error (a user error: an unknown key, a bad boolean, broken quoting)
// is set.
func ParseMount(s string) (Mount, error) {
	m := Mount{Orig: s, Type: "volume"}
	fields, err := splitFields(s)
	if err != nil {
		return m, fmt.Errorf("mount %q: %v", s, err)
	}
	var problems []string
	bool_ := func(key, val string) bool {
		b, err := strconv.ParseBool(val)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s=%q is not true or false", key, val))
		}
		return b
	}
	for _, field := range fields {
		key, val, hasVal := strings.Cut(field, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		switch {
		case key == "":
			if strings.TrimSpace(field) != "" {
				problems = append(problems, fmt.Sprintf("%q has no key", field))
			}
		case key == "readonly" || key == "ro":
			m.ReadOnly = !hasVal || bool_(key, val)
		case !hasVal && key != "volume-nocopy" && key != "bind-nonrecursive":
			problems = append(problems, fmt.Sprintf("%q must be a key=value pair", field))
		case key == "type":
			m.Type = strings.ToLower(val)
		case key == "source" || key == "src":
			m.Source = val
		case key == "target" || key == "destination" || key == "dst":
			m.Target = val
		case key == "external":
			m.External = bool_(key, val)
		case ignoredMountKeys[key]:
		default:
			problems = append(problems, fmt.Sprintf("unknown option %q (use type, source, target, readonly)", key))
		}
	}
	if len(problems) > 0 {
		return m, fmt.Errorf("mount %q: %s", s, strings.Join(problems, "; "))
	}
	return m, nil
}

// splitFields splits s at the commas outside double quotes and drops the
// quotes: a quoted field (Docker's CSV, `"source=/a,b"`) and a quoted
// value (`source="/a,b"`, as the reference CLI writes workspaceMount) both
// give source=/a,b; "" inside quotes is one quote.
func splitFields(s string) ([]string, error) {
	var fields []string
	var b strings.Builder
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' && quoted && i+1 < len(s) && s[i+1] == '"':
			b.WriteByte('"')
			i++
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			fields = append(fields, b.String())
			b.Reset()
		default:
			b.WriteByte(c)
		}
	}
	if quoted {
		return nil, errors.New("a quote is not closed")
	}
	return append(fields, b.String()), nil
}

// UnmarshalJSON accepts the string and the object form. A string that is
// not a valid --mount is kept, with its Problem, for Check to report.
func (m *Mount) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		pm, err := ParseMount(s)
		if err != nil {
			pm.Problem = err.Error()
		}
		*m = pm
		return nil
	}
	var o mountObject
	if jsonKind(b) != "object" || json.Unmarshal(b, &o) != nil {
		return typeError(b, reflect.TypeFor[Mount](), `a string or an object with "type", "source" and "target"`)
	}
	*m = Mount{Type: o.Type, Source: o.Source, Target: o.Target, External: o.External, ReadOnly: o.ReadOnly}
	return nil
}

// MarshalJSON writes the string form as written, else the object form, so
// that a mount read back (a feature's, merged with the configuration)
// keeps every field.
func (m Mount) MarshalJSON() ([]byte, error) {
	if m.Orig != "" {
		return json.Marshal(m.Orig)
	}
	return json.Marshal(mountObject{Type: m.Type, Source: m.Source, Target: m.Target, External: m.External, ReadOnly: m.ReadOnly})
}

// mountObject is the object form of a mount.
type mountObject struct {
	Type     string `json:"type"`
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	External bool   `json:"external,omitempty"`
	ReadOnly bool   `json:"readonly,omitempty"`
}

// RepoBindSource is the path, relative to the repository, that a bind
// mount's source names when it is inside the repository: an absolute path
// under workspace (the local workspace folder, as ${localWorkspaceFolder}
// gives it: "${localWorkspaceFolder}/.devcontainer/data") or a relative
// path, taken relative to the repository. ok is false for any other host
// path, ".." that climbs out included. The check is lexical: the runner
// resolves the path inside the checkout when it mounts it, following no
// symbolic link (internal/confine), so a link in the repository cannot
// lead it elsewhere.
func RepoBindSource(source, workspace string) (rel string, ok bool) {
	if source == "" || workspace == "" || strings.IndexByte(source, 0) >= 0 {
		return "", false
	}
	p := source
	if !filepath.IsAbs(p) {
		p = filepath.Join(workspace, p)
	}
	rel, err := filepath.Rel(filepath.Clean(workspace), filepath.Clean(p))
	if err != nil || !filepath.IsLocal(rel) && rel != "." {
		return "", false
	}
	return rel, true
}

// LocalWorkspaceFolder is the repository's folder as ${localWorkspaceFolder}
// gives it ("" for a configuration not read by Read or Load).
func (c *Config) LocalWorkspaceFolder() string {
	if c == nil || c.subst == nil {
		return ""
	}
	return c.subst.localWorkspaceFolder
}
