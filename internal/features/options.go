package features

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/covedev/cove/internal/usererr"
)

var (
	nonWord      = regexp.MustCompile(`[^\w_]`)
	leadingDigit = regexp.MustCompile(`^[\d_]+`)
)

// EnvName turns an option id into its environment variable name, as the
// specification does: non-word characters become "_", leading digits and
// underscores collapse to one "_", and the result is upper-cased.
func EnvName(option string) string {
	s := nonWord.ReplaceAllString(option, "_")
	s = leadingDigit.ReplaceAllString(s, "_")
	return strings.ToUpper(s)
}

// optionEnv validates the user's options against the feature's declared
// options and returns the environment install.sh runs with: every declared
// option, the user's value or the default, booleans as "true"/"false",
// sorted by variable name.
func optionEnv(ref Ref, m Metadata) ([]string, error) {
	for k := range ref.Options {
		if _, ok := m.Options[k]; !ok {
			return nil, usererr.New("feature %q has no option %q (options: %s)", ref.ID, k, optionList(m))
		}
	}
	var env []string
	for id, o := range m.Options {
		v, given := ref.Options[id]
		if !given {
			v = o.Default
			if v == nil && o.Type == "string" {
				env = append(env, EnvName(id)+"=")
				continue
			}
		}
		s, err := optionValue(o, v)
		if err != nil {
			if given {
				return nil, usererr.New("feature %q: option %q: %v", ref.ID, id, err)
			}
			return nil, usererr.New("feature %q: default of option %q: %v", ref.ID, id, err)
		}
		env = append(env, EnvName(id)+"="+s)
	}
	sort.Strings(env)
	return env, nil
}

func optionValue(o Option, v any) (string, error) {
	switch o.Type {
	case "boolean":
		switch b := v.(type) {
		case nil:
			return "false", nil
		case bool:
			return fmt.Sprint(b), nil
		case string:
			if b == "true" || b == "false" {
				return b, nil
			}
		}
		return "", fmt.Errorf("%v is not a boolean (true or false)", v)
	default:
		var s string
		switch x := v.(type) {
		case nil:
		case string:
			s = x
		case bool, float64, int, int64:
			s = fmt.Sprint(x)
		default:
			return "", fmt.Errorf("%v is not a string", v)
		}
		if len(o.Enum) > 0 && !slices.Contains(o.Enum, s) {
			return "", fmt.Errorf("%q is not one of %s", s, strings.Join(o.Enum, ", "))
		}
		return s, nil
	}
}

func optionList(m Metadata) string {
	if len(m.Options) == 0 {
		return "none"
	}
	ids := make([]string, 0, len(m.Options))
	for id := range m.Options {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return strings.Join(ids, ", ")
}

// GivenOptions are the options devcontainer.json (or a dependsOn) gave f,
// by option id, each as install.sh receives it (booleans "true" or
// "false"); nil when none were given. The defaults are left out: they are
// the feature's, not the user's.
func (f Feature) GivenOptions() map[string]string {
	if len(f.Ref.Options) == 0 {
		return nil
	}
	out := make(map[string]string, len(f.Ref.Options))
	for id, v := range f.Ref.Options {
		s, err := optionValue(f.Meta.Options[id], v)
		if err != nil {
			s = fmt.Sprint(v) // optionEnv refused it before any Feature was made
		}
		out[id] = s
	}
	return out
}
