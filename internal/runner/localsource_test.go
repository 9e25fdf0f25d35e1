package runner

import (
	"context"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/content"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// TestLocalSourcesRefusedWhateverTheSpelling (F15): a runner without
// --allow-local-sources refuses every spelling of a local source before it
// touches the host, and sources the shared classification refuses never
// count as remote.
func TestLocalSourcesRefusedWhateverTheSpelling(t *testing.T) {
	c := cloneStep{allowLocal: false}
	for _, src := range []string{"FILE:///etc", "File:///x", "file:///x", "fIlE://localhost/etc", "/etc"} {
		env := &covev1.Environment{Id: "e1", Spec: &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: src}}}
		err := c.do(context.Background(), &stepEnv{env: env, lay: envdir.New(t.TempDir(), env.Id)})
		msg, visible := usererr.Message(err)
		if !visible || !strings.Contains(msg, "local path, which this runner does not accept") {
			t.Errorf("%q: got %v, want the local-source refusal", src, err)
		}
	}
	// Not local, and refused by content.Clone's classification (the same
	// function): they never reach git either.
	for _, src := range []string{" /etc", "./x", "ext::sh -c id", "-uhttps://x"} {
		if isLocalSource(src) {
			t.Errorf("%q classified local", src)
		}
		if _, err := content.ClassifySource(src); err == nil {
			t.Errorf("%q accepted by the classification", src)
		}
	}
	for _, src := range []string{"https://example.com/a.git", "HTTPS://example.com/a.git", "git@example.com:a/b.git"} {
		if local, err := content.ClassifySource(src); local || err != nil {
			t.Errorf("%q: local=%v err=%v, want a remote source", src, local, err)
		}
	}
}
