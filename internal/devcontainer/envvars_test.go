package devcontainer

import (
	"reflect"
	"testing"
)

// TestContainerEnvNotResolvedInItself: once the container's environment
// is known, ${containerEnv:VAR} resolves in remoteEnv and lifecycle
// commands but stays as written in containerEnv, in the configuration and
// in every metadata entry (as the reference CLI leaves it); unknown
// ${...} forms stay everywhere. ContainerEnvEntries tells the features'
// containerEnv from the rest.
func TestContainerEnvNotResolvedInItself(t *testing.T) {
	doc := `{"image": "a",
	  "containerEnv": {"C": "${containerEnv:PATH}", "U": "${foo:bar}", "P": "/x:${PATH}"},
	  "remoteEnv": {"R": "${containerEnv:PATH}:/r", "U": "${foo:bar}"},
	  "postCreateCommand": "echo ${containerEnv:PATH} ${foo:bar}"}`
	c, _, err, _ := load(t, doc, LoadOptions{LocalWorkspaceFolder: "/srv/repo"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Merge(c, []MetadataEntry{
		{"containerEnv": map[string]any{"IMG": "${containerEnv:HOME}"}},
		{"id": "ghcr.io/x/f:1", "containerEnv": map[string]any{"PATH": "/f/bin:${PATH}"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.ResolveContainerEnv(map[string]string{"PATH": "/bin", "HOME": "/root"}); err != nil {
		t.Fatal(err)
	}
	wantCE := map[string]string{"C": "${containerEnv:PATH}", "U": "${foo:bar}", "P": "/x:${PATH}", "IMG": "${containerEnv:HOME}", "PATH": "/f/bin:${PATH}"}
	if got := m.ContainerEnv(); !reflect.DeepEqual(got, wantCE) {
		t.Errorf("containerEnv = %v\nwant %v", got, wantCE)
	}
	if re := m.RemoteEnv(); *re["R"] != "/bin:/r" || *re["U"] != "${foo:bar}" {
		t.Errorf("remoteEnv R=%q U=%q", *re["R"], *re["U"])
	}
	if pc := m.Lifecycle().PostCreate; len(pc) != 1 || pc[0].Command.Shell != "echo /bin ${foo:bar}" {
		t.Errorf("postCreateCommand = %+v", pc)
	}
	want := []EntryEnv{
		{ID: "", Env: map[string]string{"IMG": "${containerEnv:HOME}"}},
		{ID: "ghcr.io/x/f:1", Env: map[string]string{"PATH": "/f/bin:${PATH}"}},
		{ID: "", Env: map[string]string{"C": "${containerEnv:PATH}", "U": "${foo:bar}", "P": "/x:${PATH}"}},
	}
	if got := m.ContainerEnvEntries(); !reflect.DeepEqual(got, want) {
		t.Errorf("ContainerEnvEntries = %+v\nwant %+v", got, want)
	}
}
