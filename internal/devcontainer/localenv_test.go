package devcontainer

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLocalEnvReferences(t *testing.T) {
	doc := `{
  // a comment that mentions ${localEnv:IN_COMMENT} is not a reference
  "image": "debian",
  "containerEnv": {
    "EMAIL": "${localEnv:GIT_EMAIL}",
    "${localEnv:IN_KEY}": "keys are not substituted",
    "TZ": "${localEnv:TZ:UTC}",
  },
  "remoteEnv": {"P": "${env:OLD_STYLE}/bin:${localEnv:GIT_EMAIL:nobody@example.com}"},
  "mounts": ["source=${localEnv:HOME}${localEnv:USERPROFILE},target=/h,type=bind"],
  "postCreateCommand": ["echo", "${localEnv:}", "${containerEnv:PATH}", "${localEnv:URL:http://x}"],
  "forwardPorts": [3000]
}`
	refs, err := LocalEnvReferences("devcontainer.json", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		name, def  string
		hasDef     bool
		pos, where string
	}
	wants := []want{
		{"GIT_EMAIL", "nobody@example.com", true, "devcontainer.json:5:14", "containerEnv.EMAIL"},
		{"TZ", "UTC", true, "devcontainer.json:7:11", "containerEnv.TZ"},
		{"OLD_STYLE", "", false, "devcontainer.json:9:22", "remoteEnv.P"},
		{"HOME", "", false, "devcontainer.json:10:14", "mounts[0]"},
		{"USERPROFILE", "", false, "devcontainer.json:10:14", "mounts[0]"},
		// As in the reference CLI only the text up to the next ':' is the default.
		{"URL", "http", true, "devcontainer.json:11:73", "postCreateCommand[3]"},
	}
	if len(refs) != len(wants) {
		t.Fatalf("got %d references %+v, want %d", len(refs), refs, len(wants))
	}
	for i, w := range wants {
		r := refs[i]
		if r.Name != w.name || r.Default != w.def || r.HasDefault != w.hasDef || r.Pos != w.pos || r.Property != w.where {
			t.Errorf("reference %d = %+v, want %+v", i, r, w)
		}
	}
	if _, err := LocalEnvReferences("bad.json", []byte(`{"a": `)); err == nil {
		t.Error("a syntax error was accepted")
	}
}

// TestConfigLocalEnvReferences: the method reads the text Parse read (the
// runner never opens the repository's file a second time) and agrees with
// the function on it.
func TestConfigLocalEnvReferences(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, ".devcontainer.json")
	if err := os.WriteFile(p, []byte(`{"image": "x", /* c */ "containerEnv": {"A": "${localEnv:A_VAR:d}"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _, err := Read(dir, "", LoadOptions{LocalEnv: map[string]string{"A_VAR": "set"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	refs := c.LocalEnvReferences()
	if len(refs) != 1 || refs[0].Name != "A_VAR" || refs[0].Default != "d" || refs[0].Pos != ".devcontainer.json:1:46" {
		t.Fatalf("references %+v", refs)
	}
	if c.ContainerEnv["A"] != "set" {
		t.Errorf("containerEnv A = %q, want the value given", c.ContainerEnv["A"])
	}
	var nilCfg *Config
	if refs := nilCfg.LocalEnvReferences(); refs != nil {
		t.Errorf("nil config: %+v", refs)
	}
}
