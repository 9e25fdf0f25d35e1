package devcontainer

// EntryEnv is one metadata entry's containerEnv.
type EntryEnv struct {
	// ID is the entry's id (a feature's), "" for none (the image's own
	// entries, the configuration).
	ID  string
	Env map[string]string
}

// ContainerEnvEntries is each entry's containerEnv, in merge order (the
// image's, the features', the configuration's), for callers that treat
// the sources differently: features' containerEnv becomes Dockerfile ENV
// lines in the reference CLI, the rest `docker run -e` values. Values
// that are not strings are skipped (decode reports them).
func (m *Merged) ContainerEnvEntries() []EntryEnv {
	var out []EntryEnv
	for _, e := range m.Entries {
		raw, ok := e["containerEnv"].(map[string]any)
		if !ok || len(raw) == 0 {
			continue
		}
		ee := EntryEnv{Env: map[string]string{}}
		ee.ID, _ = e["id"].(string)
		for k, v := range raw {
			if sv, ok := v.(string); ok {
				ee.Env[k] = sv
			}
		}
		out = append(out, ee)
	}
	return out
}

// substituteExceptContainerEnv is substituteValue on every property of e
// but containerEnv.
func substituteExceptContainerEnv(e map[string]any, r func(match, name string, args []string) string) map[string]any {
	ce, ok := e["containerEnv"]
	out := substituteValue(e, r).(map[string]any)
	if ok {
		out["containerEnv"] = ce
	}
	return out
}
