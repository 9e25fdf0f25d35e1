package envconfig

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/devcontainer"
)

// devContainerEnv is the dev container's environment: the image's, the
// features' containerEnv (the entries of in.Features), then the
// configuration's (image metadata, devcontainer.json, runArgs -e/--env);
// see ContainerEnv. Values kept as written are reported in dc.Warnings.
func devContainerEnv(in Input, cfg *devcontainer.Config, merged *devcontainer.Merged, img Image, dc *DevcontainerState) []string {
	featureIDs := map[string]bool{}
	for _, f := range in.Features {
		featureIDs[f.ID] = true
	}
	var featureEnv []map[string]string
	configEnv := map[string]string{}
	for _, e := range merged.ContainerEnvEntries() {
		if e.ID != "" && featureIDs[e.ID] {
			featureEnv = append(featureEnv, e.Env)
			continue
		}
		for k, v := range e.Env {
			configEnv[k] = v
		}
	}
	for k, v := range cfg.Run.Env {
		configEnv[k] = v
	}
	env, warnings := ContainerEnv(img.Config.Env, featureEnv, configEnv)
	dc.Warnings = append(dc.Warnings, warnings...)
	return env
}

// ContainerEnv is the dev container's environment (KEY=VALUE pairs) and
// warnings about values kept as written:
//   - base is the image's environment;
//   - features are the features' containerEnv, in install order: the
//     reference CLI makes them Dockerfile ENV lines (and cove's install
//     script exports them so): ${NAME} and $NAME expand against what is
//     set so far, an unset variable to "", in name order per feature;
//   - config is the configuration's containerEnv (image metadata,
//     devcontainer.json, runArgs --env), which the reference CLI passes
//     as `docker run -e` values, unexpanded: cove expands ${NAME} and
//     $NAME when the image or a feature sets NAME (so "/x:${PATH}" is
//     the image's PATH with /x in front, where the reference CLI would
//     leave a PATH that finds nothing) and leaves every other reference
//     as written: an unset variable, ${containerEnv:NAME} (defined for
//     remoteEnv and later, not here), ${anything:else}.
//
// Variables keep base's order; new ones follow in name order.
func ContainerEnv(base []string, features []map[string]string, config map[string]string) ([]string, []string) {
	vals := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	for _, kv := range base {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	for _, fe := range features {
		for _, k := range slices.Sorted(maps.Keys(fe)) {
			set(k, devcontainer.EnvRefRE.ReplaceAllStringFunc(fe[k], func(ref string) string {
				return vals[strings.Trim(ref, "${}")]
			}))
		}
	}
	snapshot := maps.Clone(vals) // config values see the image's and the features', not each other
	var warnings []string
	for _, k := range slices.Sorted(maps.Keys(config)) {
		v := devcontainer.EnvRefRE.ReplaceAllStringFunc(config[k], func(ref string) string {
			if val, ok := snapshot[strings.Trim(ref, "${}")]; ok {
				return val
			}
			return ref
		})
		if left := variableRefs(v); len(left) > 0 {
			warnings = append(warnings, keptWarning(k, left))
		}
		set(k, v)
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vals[k])
	}
	return out, warnings
}

// anyRef is any ${...} or $NAME left in a value.
var anyRef = regexp.MustCompile(`\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*`)

// variableRefs lists the distinct variable references in v.
func variableRefs(v string) []string {
	var out []string
	for _, r := range anyRef.FindAllString(v, -1) {
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// keptWarning says why the references left in containerEnv value k stay
// as written, and what to write instead.
func keptWarning(k string, refs []string) string {
	for _, r := range refs {
		if name, ok := strings.CutPrefix(r, "${containerEnv:"); ok {
			name, _, _ = strings.Cut(strings.TrimSuffix(name, "}"), ":")
			return fmt.Sprintf("containerEnv.%s: %s is kept as written: ${containerEnv:...} is defined in remoteEnv and lifecycle commands, "+
				"not inside containerEnv (as in the reference CLI); write ${%s} to build on the image's value, or set %s in remoteEnv", k, r, name, k)
		}
	}
	return fmt.Sprintf("containerEnv.%s: %s kept as written: only variables the image or a feature sets are expanded "+
		"(the reference CLI expands none); set the variable in the image, or drop the reference", k, strings.Join(refs, ", "))
}
