package features

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

func optsMeta(id string, extra map[string]any) map[string]any {
	m := map[string]any{"id": id, "version": "1.0.0", "name": id}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func TestOptionsEnv(t *testing.T) {
	ctx := context.Background()
	cfg := t.TempDir()
	writeFeature(t, filepath.Join(cfg, "py"), optsMeta("py", map[string]any{
		"options": map[string]any{
			"version":      map[string]any{"type": "string", "enum": []string{"latest", "3.10"}, "default": "latest"},
			"pip":          map[string]any{"type": "boolean", "default": true},
			"optimize":     map[string]any{"type": "boolean", "default": false},
			"install-path": map[string]any{"type": "string", "proposals": []string{"/usr"}, "default": "/usr/local"},
			"2fa.mode":     map[string]any{"type": "string"},
		},
	}), "")
	r := newResolver(t)

	fs, err := r.Resolve(ctx, []Ref{{ID: "./py", Options: map[string]any{"version": "3.10", "pip": false, "install-path": "/opt"}}}, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"INSTALL_PATH=/opt", "OPTIMIZE=false", "PIP=false", "VERSION=3.10", "_FA_MODE="}
	slices.Sort(want)
	if !slices.Equal(fs[0].Env, want) {
		t.Fatalf("env = %q, want %q", fs[0].Env, want)
	}

	fs, err = r.Resolve(ctx, []Ref{{ID: "./py", Options: map[string]any{"pip": "true"}}}, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(fs[0].Env, "VERSION=latest") || !slices.Contains(fs[0].Env, "PIP=true") {
		t.Fatalf("defaults not applied: %q", fs[0].Env)
	}

	for name, opts := range map[string]map[string]any{
		"unknown option": {"nope": "x"},
		"not in enum":    {"version": "2.7"},
		"bad boolean":    {"pip": "yes"},
	} {
		_, err := r.Resolve(ctx, []Ref{{ID: "./py", Options: opts}}, cfg, nil)
		msg, ok := usererr.Message(err)
		if !ok {
			t.Errorf("%s: err = %v, want a user error", name, err)
			continue
		}
		if !strings.Contains(msg, "./py") {
			t.Errorf("%s: message %q does not name the feature", name, msg)
		}
		t.Logf("%s: %s", name, msg)
	}

	for in, want := range map[string]string{"version": "VERSION", "install-path": "INSTALL_PATH", "9lives": "_LIVES", "a.b c": "A_B_C", "_x": "_X"} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveOCIDependsOn(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry(t)
	src := t.TempDir()
	base := reg.publish(t, "features/base:1", writeFeature(t, filepath.Join(src, "base"), optsMeta("base", map[string]any{
		"options":      map[string]any{"greeting": map[string]any{"type": "string", "default": "hello"}},
		"containerEnv": map[string]string{"BASE_HOME": "/opt/base"},
	}), "echo base\n"))
	app := reg.publish(t, "features/app:1", writeFeature(t, filepath.Join(src, "app"), optsMeta("app", map[string]any{
		"dependsOn": map[string]any{base: map[string]any{"greeting": "hi"}},
	}), "echo app\n"))

	r := newResolver(t)
	fs, err := r.Resolve(ctx, []Ref{{ID: app}}, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(fs); !slices.Equal(got, []string{"base", "app"}) {
		t.Fatalf("order = %v, want [base app]", got)
	}
	if !slices.Equal(fs[0].Env, []string{"GREETING=hi"}) {
		t.Errorf("dependency env = %q, want its dependsOn options", fs[0].Env)
	}
	if fs[0].Meta.ContainerEnv["BASE_HOME"] != "/opt/base" {
		t.Errorf("metadata not parsed: %+v", fs[0].Meta)
	}
	for _, f := range fs {
		if !strings.HasPrefix(f.Digest, "sha256:") {
			t.Errorf("digest %q", f.Digest)
		}
		if _, err := os.Stat(filepath.Join(f.Dir, "install.sh")); err != nil {
			t.Errorf("unpacked dir: %v", err)
		}
	}

	// A second resolve (another environment) fetches manifests only.
	blobs := reg.blobGets()
	again, err := r.Resolve(ctx, []Ref{{ID: app}, {ID: base, Options: map[string]any{"greeting": "hi"}}}, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if reg.blobGets() != blobs {
		t.Errorf("cached features downloaded again: %d blob GETs, had %d", reg.blobGets(), blobs)
	}
	if len(again) != 2 || again[0].Digest != fs[0].Digest {
		t.Errorf("the same dependency given twice must be installed once: %v", ids(again))
	}

	// The user's base with other options is a distinct installation.
	two, err := r.Resolve(ctx, []Ref{{ID: app}, {ID: base}}, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(two) != 3 {
		t.Errorf("base with two option sets: got %v, want 3 features", ids(two))
	}

	// Republishing changed content changes the digest.
	if err := os.WriteFile(filepath.Join(src, "base", "install.sh"), []byte("echo changed\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	reg.publish(t, "features/base:1", filepath.Join(src, "base"))
	fs2, err := r.Resolve(ctx, []Ref{{ID: base}}, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if fs2[0].Digest == fs[0].Digest {
		t.Error("digest did not change with content")
	}

	// Not found: a user error naming the feature.
	_, err = r.Resolve(ctx, []Ref{{ID: reg.host + "/features/missing:1"}}, t.TempDir(), nil)
	if msg, ok := usererr.Message(err); !ok || !strings.Contains(msg, "missing") {
		t.Errorf("missing feature: err = %v", err)
	}
}

func TestResolveTarball(t *testing.T) {
	ctx := context.Background()
	dir := writeFeature(t, filepath.Join(t.TempDir(), "go"), optsMeta("go", nil), "echo go\n")
	body := tarDir(t, dir, true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/devcontainer-feature-go.tgz" {
			http.NotFound(w, req)
			return
		}
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	r := newResolver(t)
	fs, err := r.Resolve(ctx, []Ref{{ID: srv.URL + "/devcontainer-feature-go.tgz"}}, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if fs[0].Meta.ID != "go" || !strings.HasPrefix(fs[0].Digest, "sha256:") {
		t.Fatalf("feature = %+v", fs[0])
	}
	_, err = r.Resolve(ctx, []Ref{{ID: srv.URL + "/other.tgz"}}, t.TempDir(), nil)
	if _, ok := usererr.Message(err); !ok {
		t.Errorf("404: err = %v, want a user error", err)
	}
	_, err = r.Resolve(ctx, []Ref{{ID: "http://example.com/f.tgz"}}, t.TempDir(), nil)
	if msg, ok := usererr.Message(err); !ok || !strings.Contains(msg, "https") {
		t.Errorf("plain http to a remote host: err = %v", err)
	}
}

func TestResolveLocal(t *testing.T) {
	ctx := context.Background()
	repo := t.TempDir()
	cfg := filepath.Join(repo, ".devcontainer")
	writeFeature(t, filepath.Join(cfg, "local"), optsMeta("local", nil), "echo one\n")
	writeFeature(t, filepath.Join(repo, "..", filepath.Base(repo)+"-outside"), optsMeta("outside", nil), "")
	t.Cleanup(func() { os.RemoveAll(filepath.Join(repo, "..", filepath.Base(repo)+"-outside")) })
	r := &Resolver{CacheDir: t.TempDir(), RootDir: repo}

	fs, err := r.Resolve(ctx, []Ref{{ID: "./local"}}, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	d1 := fs[0].Digest
	if strings.HasPrefix(fs[0].Dir, cfg) {
		t.Error("local feature not copied into the cache")
	}
	if err := os.WriteFile(filepath.Join(cfg, "local", "install.sh"), []byte("echo two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, err = r.Resolve(ctx, []Ref{{ID: "./local"}}, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fs[0].Digest == d1 {
		t.Error("digest did not change with content")
	}

	for _, id := range []string{"../../" + filepath.Base(repo) + "-outside", "./nope"} {
		_, err = r.Resolve(ctx, []Ref{{ID: id}}, cfg, nil)
		if msg, ok := usererr.Message(err); !ok {
			t.Errorf("%s: err = %v, want user error", id, err)
		} else {
			t.Logf("%s: %s", id, msg)
		}
	}
	// A symlink pointing out of the repository is refused too.
	if err := os.Symlink(filepath.Join(repo, "..", filepath.Base(repo)+"-outside"), filepath.Join(cfg, "link")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(ctx, []Ref{{ID: "./link"}}, cfg, nil); err == nil {
		t.Error("symlink out of the repository accepted")
	}
}
