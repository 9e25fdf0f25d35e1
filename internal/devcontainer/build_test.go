package devcontainer

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDockerBuild(t *testing.T) {
	tests := []struct {
		name, json string
		want       *DockerBuild
		err        string
	}{
		{"image config", `{"image": "x"}`, nil, ""},
		{"build", `{"build": {"dockerfile": "Dockerfile", "context": "..", "args": {"A": "1", "N": 2}, "target": "dev", "cacheFrom": "reg/cache"}}`,
			&DockerBuild{Dockerfile: "Dockerfile", Context: "..", Args: map[string]string{"A": "1", "N": "2"}, Target: "dev", CacheFrom: []string{"reg/cache"}, Labels: map[string]string{}}, ""},
		{"legacy", `{"dockerFile": "Dockerfile.dev", "context": "src"}`,
			&DockerBuild{Dockerfile: "Dockerfile.dev", Context: "src", Args: map[string]string{}, Labels: map[string]string{}}, ""},
		{"safe options", `{"build": {"dockerfile": "D", "options": ["--build-arg", "X=1", "--label=a=b", "--target=t"]}}`,
			&DockerBuild{Dockerfile: "D", Context: ".", Args: map[string]string{"X": "1"}, Labels: map[string]string{"a": "b"}, Target: "t"}, ""},
		{"unsafe options", `{"build": {"dockerfile": "D", "options": ["--network=host", "--add-host=x:1.2.3.4"]}}`, nil, `build.options[0]: "--network=host": a build always uses the runner's build network`},
		{"unsafe options, each named", `{"build": {"dockerfile": "D", "options": ["--network=host", "--add-host=x:1.2.3.4"]}}`, nil, `build.options[1]: docker build option "--add-host=x:1.2.3.4" is not supported. To fix: remove it`},
		{"absolute dockerfile", `{"build": {"dockerfile": "/etc/passwd"}}`, nil, `build.dockerfile: "/etc/passwd" is an absolute path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, ".devcontainer.json")
			if err := os.WriteFile(p, []byte(tt.json), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, _, err := Read(dir, "", LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := cfg.DockerBuild()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				if cerr := cfg.Check(Allow{Build: true}); cerr == nil {
					t.Fatal("Check accepted an invalid build")
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
			if got != nil {
				if err := cfg.Check(Allow{}); err == nil || !strings.Contains(err.Error(), "cannot build images from Dockerfiles") {
					t.Fatalf("a runner without builds must refuse it: %v", err)
				}
				if err := cfg.Check(Allow{Build: true}); err != nil {
					t.Fatalf("a runner with builds refused it: %v", err)
				}
			}
		})
	}
}

func TestBuildWithoutDockerfileIsMissingImage(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".devcontainer.json"), []byte(`{"build": {"context": "."}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := Read(dir, "", LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Check(Allow{Build: true}); err == nil {
		t.Fatal("a build without a dockerfile was accepted")
	}
}
