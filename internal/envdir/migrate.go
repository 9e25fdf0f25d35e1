package envdir

import (
	"encoding/json"
	"fmt"
)

// migrations[i] turns a version i document into version i+1. A migration
// works on the JSON document, not on Go types, so it keeps working when
// the types change later.
var migrations = []func(doc map[string]json.RawMessage) error{
	v0to1,
}

// migrate brings doc to StateVersion in place.
func migrate(doc map[string]json.RawMessage) error {
	v := 0
	if raw, ok := doc["version"]; ok {
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("version: %w", err)
		}
	}
	if v > StateVersion {
		return fmt.Errorf("%w (version %d; this runner reads up to %d): upgrade the runner", ErrNewerState, v, StateVersion)
	}
	if v < 0 {
		return fmt.Errorf("invalid state version %d", v)
	}
	for ; v < StateVersion; v++ {
		if err := migrations[v](doc); err != nil {
			return fmt.Errorf("migrate state from version %d: %w", v, err)
		}
	}
	doc["version"] = json.RawMessage(fmt.Sprint(StateVersion))
	return nil
}

// v0to1 moves the flat fields of the unversioned file (runners up to
// f9135bc) into the sections of the steps that own them.
func v0to1(doc map[string]json.RawMessage) error {
	move := func(section, from, to string) {
		raw, ok := doc[from]
		if !ok {
			return
		}
		delete(doc, from)
		sec := sectionOf(doc, section)
		sec[to] = raw
		doc[section] = mustMarshal(sec)
	}
	// The image section's "image" key would collide with the old flat
	// "image" field: take the flat fields out first.
	flat := map[string]json.RawMessage{}
	for _, k := range []string{"image", "imageDigest", "layers", "user", "env", "devcontainer", "compose"} {
		if raw, ok := doc[k]; ok {
			flat[k] = raw
			delete(doc, k)
		}
	}
	move("content", "repoName", "repoName")
	move("content", "contentReady", "ready")
	move("mount", "workspaceUser", "workspaceOwner")
	move("network", "ip", "ip")
	move("rebuild", "builtGeneration", "generation")
	move("start", "startedOnce", "startedOnce")
	move("failure", "failedSpecVersion", "specVersion")
	move("failure", "failureMessage", "message")
	img := map[string]json.RawMessage{}
	for from, to := range map[string]string{"image": "ref", "imageDigest": "digest", "layers": "layers", "user": "user", "env": "env", "compose": "compose"} {
		if raw, ok := flat[from]; ok {
			img[to] = raw
		}
	}
	if raw, ok := flat["devcontainer"]; ok && string(raw) != "null" {
		// The lifecycle's progress moves to its own section; the rest is
		// the resolved configuration.
		var dc map[string]json.RawMessage
		if err := json.Unmarshal(raw, &dc); err != nil {
			return fmt.Errorf("devcontainer: %w", err)
		}
		lc := map[string]json.RawMessage{}
		for from, to := range map[string]string{"createdDone": "createdDone", "lifecyclePid": "pid"} {
			if v, ok := dc[from]; ok {
				lc[to] = v
				delete(dc, from)
			}
		}
		if len(lc) > 0 {
			doc["lifecycle"] = mustMarshal(lc)
		}
		img["devcontainer"] = mustMarshal(dc)
	}
	if len(img) > 0 {
		doc["image"] = mustMarshal(img)
	}
	return nil
}

func sectionOf(doc map[string]json.RawMessage, name string) map[string]json.RawMessage {
	sec := map[string]json.RawMessage{}
	if raw, ok := doc[name]; ok {
		_ = json.Unmarshal(raw, &sec)
	}
	return sec
}

func mustMarshal(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // maps of raw messages always marshal
	}
	return b
}
