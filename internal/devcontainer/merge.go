package devcontainer

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/covedev/cove/internal/usererr"
)

// MetadataLabel is the image label holding dev container metadata.
const MetadataLabel = "devcontainer.metadata"

// MetadataEntry is one entry of image metadata: a devcontainer.json-like
// object. Entries contributed by features carry their reference in "id".
type MetadataEntry = map[string]any

// pickConfigProperties are the devcontainer.json properties that take part
// in the merge (the reference CLI's pickConfigProperties).
var pickConfigProperties = []string{
	"onCreateCommand", "updateContentCommand", "postCreateCommand", "postStartCommand",
	"postAttachCommand", "waitFor", "customizations", "mounts", "containerEnv", "containerUser",
	"init", "privileged", "capAdd", "securityOpt", "remoteUser", "userEnvProbe", "remoteEnv",
	"overrideCommand", "portsAttributes", "otherPortsAttributes", "forwardPorts", "shutdownAction",
	"updateRemoteUserUID", "hostRequirements",
}

// replaceProperties are replaced by their collected plural in the merge.
var replaceProperties = []string{
	"customizations", "entrypoint", "onCreateCommand", "updateContentCommand", "postCreateCommand",
	"postStartCommand", "postAttachCommand", "shutdownAction",
}

var lifecycleHooks = []string{"onCreateCommand", "updateContentCommand", "postCreateCommand", "postStartCommand", "postAttachCommand"}

// ParseImageMetadata parses the devcontainer.metadata label: a JSON array of
// entries or a single object. An empty label has no entries.
func ParseImageMetadata(label string) ([]MetadataEntry, error) {
	if label == "" {
		return nil, nil
	}
	var v any
	if err := json.Unmarshal([]byte(label), &v); err != nil {
		return nil, usererr.Wrap(err, "image label %s is not valid JSON: %v", MetadataLabel, err)
	}
	switch v := v.(type) {
	case []any:
		out := make([]MetadataEntry, 0, len(v))
		for i, e := range v {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, usererr.New("image label %s: entry %d is %s, not an object", MetadataLabel, i, jsonType(e))
			}
			out = append(out, m)
		}
		return out, nil
	case map[string]any:
		return []MetadataEntry{v}, nil
	}
	return nil, usererr.New("image label %s must be an array or an object, not %s", MetadataLabel, jsonType(v))
}

// MergeImageMetadata merges the image's devcontainer.metadata label with
// cfg as the Dev Containers spec says (cfg is the last entry).
func MergeImageMetadata(cfg *Config, label string) (*Merged, error) {
	entries, err := ParseImageMetadata(label)
	if err != nil {
		return nil, err
	}
	return Merge(cfg, entries)
}

// Merge merges metadata entries (the image's, then one per installed
// feature, in install order) with cfg, which comes last. Local variables
// in the entries are substituted as in cfg.
func Merge(cfg *Config, entries []MetadataEntry) (*Merged, error) {
	var all []MetadataEntry
	for _, e := range entries {
		if cfg.subst != nil {
			e = substituteValue(e, cfg.subst.replace).(map[string]any)
		}
		all = append(all, e)
	}
	pick := MetadataEntry{}
	for _, k := range pickConfigProperties {
		if v, ok := cfg.Raw[k]; ok {
			pick[k] = v
		}
	}
	all = append(all, pick)
	all = slices.DeleteFunc(all, func(e MetadataEntry) bool { return len(e) == 0 })
	m := &Merged{Config: cfg, Entries: all, configEntry: len(pick) > 0}
	m.Raw = mergeRaw(cfg.Raw, all)
	if err := m.decode(); err != nil {
		return nil, err
	}
	return m, nil
}

// mergeRaw is the reference CLI's mergeConfiguration on decoded JSON.
func mergeRaw(config map[string]any, entries []MetadataEntry) map[string]any {
	out := maps.Clone(config)
	for _, k := range replaceProperties {
		delete(out, k)
	}
	set := func(k string, v any) {
		if v == nil {
			delete(out, k)
			return
		}
		out[k] = v
	}
	last := func(k string, ok func(any) bool) any {
		for i := len(entries) - 1; i >= 0; i-- {
			if v, present := entries[i][k]; present && ok(v) {
				return v
			}
		}
		return nil
	}
	isBool := func(v any) bool { _, ok := v.(bool); return ok }
	some := func(k string) bool {
		for _, e := range entries {
			if truthy(e[k]) {
				return true
			}
		}
		return false
	}
	out["init"] = some("init")
	out["privileged"] = some("privileged")
	set("capAdd", union(entries, "capAdd"))
	set("securityOpt", union(entries, "securityOpt"))
	var entrypoints []any
	for _, e := range entries {
		if truthy(e["entrypoint"]) {
			entrypoints = append(entrypoints, e["entrypoint"])
		}
	}
	set("entrypoints", nilIfEmpty(entrypoints))
	set("mounts", mergeMounts(entries))
	cust := map[string]any{}
	for _, e := range entries {
		c, _ := e["customizations"].(map[string]any)
		for _, k := range sortedKeys(c) {
			list, _ := cust[k].([]any)
			cust[k] = append(list, c[k])
		}
	}
	if len(cust) > 0 {
		out["customizations"] = cust
	}
	for _, h := range lifecycleHooks {
		list := []any{}
		for _, e := range entries {
			if truthy(e[h]) {
				list = append(list, e[h])
			}
		}
		out[h+"s"] = list
	}
	for _, k := range []string{"waitFor", "remoteUser", "containerUser", "userEnvProbe", "otherPortsAttributes", "shutdownAction"} {
		set(k, last(k, truthy))
	}
	set("overrideCommand", last("overrideCommand", isBool))
	set("updateRemoteUserUID", last("updateRemoteUserUID", isBool))
	for _, k := range []string{"remoteEnv", "containerEnv", "portsAttributes"} {
		merged := map[string]any{}
		for _, e := range entries {
			if m, ok := e[k].(map[string]any); ok {
				maps.Copy(merged, m)
			}
		}
		out[k] = merged
	}
	set("forwardPorts", mergeForwardPorts(entries))
	set("hostRequirements", mergeHostRequirements(entries))
	return out
}

func sortedKeys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

func nilIfEmpty(l []any) any {
	if len(l) == 0 {
		return nil
	}
	return l
}

// union concatenates the arrays of k, keeping the first of equal values.
func union(entries []MetadataEntry, k string) any {
	var out []any
	seen := map[string]bool{}
	for _, e := range entries {
		l, _ := e[k].([]any)
		for _, v := range l {
			key := fmt.Sprintf("%T:%v", v, v)
			if !seen[key] {
				seen[key] = true
				out = append(out, v)
			}
		}
	}
	return nilIfEmpty(out)
}

// mergeMounts keeps, for every target, the last mount, at its position.
func mergeMounts(entries []MetadataEntry) any {
	var all []any
	for _, e := range entries {
		if l, ok := e["mounts"].([]any); ok {
			all = append(all, l...)
		}
	}
	target := func(v any) string {
		switch v := v.(type) {
		case string:
			m, _ := ParseMount(v) // a bad one is reported by Check
			return m.Target
		case map[string]any:
			t, _ := v["target"].(string)
			return t
		}
		return ""
	}
	seen := map[string]bool{}
	var out []any
	for i := len(all) - 1; i >= 0; i-- {
		t := target(all[i])
		if seen[t] {
			continue
		}
		seen[t] = true
		out = append(out, all[i])
	}
	slices.Reverse(out)
	return nilIfEmpty(out)
}

// mergeForwardPorts unions ports; 3000 and "localhost:3000" are equal.
func mergeForwardPorts(entries []MetadataEntry) any {
	var out []any
	seen := map[string]bool{}
	for _, e := range entries {
		l, _ := e["forwardPorts"].([]any)
		for _, p := range l {
			key := fmt.Sprint(p)
			if f, ok := p.(float64); ok {
				key = "localhost:" + strconv.FormatFloat(f, 'f', -1, 64)
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			if n, ok := localhostPort(key); ok {
				out = append(out, n)
			} else {
				out = append(out, p)
			}
		}
	}
	return nilIfEmpty(out)
}

func localhostPort(s string) (float64, bool) {
	const prefix = "localhost:"
	if len(s) <= len(prefix) || s[:len(prefix)] != prefix {
		return 0, false
	}
	n, err := strconv.Atoi(s[len(prefix):])
	return float64(n), err == nil
}
