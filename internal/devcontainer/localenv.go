package devcontainer

import (
	"fmt"
	"regexp"
	"slices"

	"github.com/tailscale/hujson"
)

// LocalEnvRef is a variable of the user's machine that devcontainer.json
// references as ${localEnv:NAME}, ${localEnv:NAME:default} or the older
// ${env:NAME…}. On a runner there is no "local" side: the creating CLI sends
// the values of exactly these variables (EnvironmentSpec.local_env).
type LocalEnvRef struct {
	Name string
	// Default is what the variable resolves to when it is not set
	// (HasDefault), else "". As in the reference CLI, only the text up to
	// the next ':' is the default.
	Default    string
	HasDefault bool
	// Pos is "FILE:LINE:COL" of the first string that references it, and
	// Property that string's property path ("containerEnv.GIT_EMAIL").
	Pos, Property string
}

// EnvNameRE is what the CLI may send as a variable name (the server's
// bound): other names cannot be sent and resolve to their default.
var EnvNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// LocalEnvReferences lists the ${localEnv:…} and ${env:…} variables the
// devcontainer.json document data (named name in positions) references in
// its string values, in order of first appearance, one entry per name (a
// later reference with a default gives the entry its default if the first
// had none). Only devcontainer.json itself is read: image metadata and
// features cannot reference the user's machine, and a Docker Compose
// file's own ${VAR} interpolation is not localEnv. Property names are not
// substituted by the reference CLI, so they are not scanned.
func LocalEnvReferences(name string, data []byte) ([]LocalEnvRef, error) {
	v, err := hujson.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	v.Standardize()
	std := v.Pack()
	var refs []LocalEnvRef
	walkJSON("", &v, func(path string, v *hujson.Value, _ string, _ *hujson.ObjectMember) {
		t, ok := v.Value.(hujson.Literal)
		if !ok || t.Kind() != '"' {
			return
		}
		s := t.String()
		line, col := lineColumn(std, v.StartOffset)
		pos := fmt.Sprintf("%s:%d:%d", name, line, col)
		substituteString(s, func(match, kind string, args []string) string {
			if (kind != "localEnv" && kind != "env") || len(args) == 0 || args[0] == "" {
				return match
			}
			r := LocalEnvRef{Name: args[0], Pos: pos, Property: path}
			if len(args) > 1 {
				r.Default, r.HasDefault = args[1], true
			}
			i := slices.IndexFunc(refs, func(x LocalEnvRef) bool { return x.Name == r.Name })
			switch {
			case i < 0:
				refs = append(refs, r)
			case !refs[i].HasDefault && r.HasDefault:
				refs[i].Default, refs[i].HasDefault = r.Default, true
			}
			return match
		})
	})
	return refs, nil
}

// LocalEnvReferences lists the local variables c's file references (see
// the function of that name), from the text Parse read.
func (c *Config) LocalEnvReferences() []LocalEnvRef {
	if c == nil || c.src == nil {
		return nil
	}
	refs, _ := LocalEnvReferences(c.src.name, c.src.data) // parsed before: cannot fail
	return refs
}
