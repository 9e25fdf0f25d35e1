package compose

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/usererr"
)

// writeRepo writes files (path → content) into a new repository directory
// and returns it.
func writeRepo(t *testing.T, files map[string]string) string {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "repo")
	for p, c := range files {
		full := filepath.Join(repo, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	return repo
}

const appDB = `
services:
  app:
    build:
      context: ..
      dockerfile: .devcontainer/Dockerfile
      args:
        GO_VERSION: "1.26"
        FROM_ENV: ${BUILD_ARG}
      target: dev
    command: sleep infinity
    environment:
      DATABASE_URL: postgres://db:5432/app
      GREETING: ${GREETING:-hello}
    env_file: app.env
    volumes:
      - ..:/workspaces/repo:cached
      - gocache:/root/.cache/go-build
    ports:
      - "8080:8080"
      - 3000
    depends_on:
      db:
        condition: service_healthy
    working_dir: /workspaces/repo
    user: vscode
  db:
    image: postgres:16
    restart: unless-stopped
    environment:
      POSTGRES_PASSWORD: postgres
    volumes:
      - pgdata:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U postgres"]
      interval: 5s
      retries: 10
volumes:
  pgdata:
  gocache:
`

func TestLoadAppDB(t *testing.T) {
	repo := writeRepo(t, map[string]string{
		".devcontainer/docker-compose.yml": appDB,
		".devcontainer/app.env":            "FROM_FILE=1\nGREETING=overridden-by-environment\n",
		".devcontainer/Dockerfile":         "FROM debian\n",
	})
	t.Setenv("GREETING", "from-process-env") // must never be used
	p, warns, err := Load(context.Background(), repo, []string{"docker-compose.yml"}, ".devcontainer", "app", nil,
		map[string]string{"BUILD_ARG": "xyz"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "devcontainer" {
		t.Errorf("name = %q, want the first file's directory name", p.Name)
	}
	if got := names(p); !slices.Equal(got, []string{"db", "app"}) {
		t.Fatalf("start order = %v, want [db app]", got)
	}
	if !slices.Equal(p.Volumes, []string{"devcontainer_gocache", "devcontainer_pgdata"}) {
		t.Errorf("volumes = %v", p.Volumes)
	}
	app, _ := p.Service("app")
	if app.Build == nil || app.Build.Context != repo || app.Build.Dockerfile != ".devcontainer/Dockerfile" || app.Build.Target != "dev" {
		t.Errorf("build = %+v", app.Build)
	}
	if app.Build.Args["GO_VERSION"] != "1.26" || app.Build.Args["FROM_ENV"] != "xyz" {
		t.Errorf("build args = %v", app.Build.Args)
	}
	if !slices.Equal(app.Command, []string{"sleep", "infinity"}) || app.Entrypoint != nil {
		t.Errorf("command = %q entrypoint = %q", app.Command, app.Entrypoint)
	}
	want := map[string]string{"DATABASE_URL": "postgres://db:5432/app", "GREETING": "hello", "FROM_FILE": "1"}
	for k, v := range want {
		if app.Environment[k] != v {
			t.Errorf("env %s = %q, want %q (env %v)", k, app.Environment[k], v, app.Environment)
		}
	}
	if app.DependsOn["db"] != ConditionHealthy {
		t.Errorf("depends_on = %v", app.DependsOn)
	}
	if !slices.Equal(app.Ports, []int{3000, 8080}) {
		t.Errorf("ports = %v", app.Ports)
	}
	if app.WorkingDir != "/workspaces/repo" || app.User != "vscode" {
		t.Errorf("working_dir %q user %q", app.WorkingDir, app.User)
	}
	wantMounts := []Mount{
		{Type: MountBind, Source: repo, Target: "/workspaces/repo"},
		{Type: MountVolume, Source: "devcontainer_gocache", Target: "/root/.cache/go-build"},
	}
	if !slices.Equal(app.Volumes, wantMounts) {
		t.Errorf("mounts = %+v, want %+v", app.Volumes, wantMounts)
	}
	db, _ := p.Service("db")
	hc := db.Healthcheck
	if hc == nil || !slices.Equal(hc.Test, []string{"CMD-SHELL", "pg_isready -U postgres"}) ||
		hc.Interval != 5*time.Second || hc.Timeout != 30*time.Second || hc.Retries != 10 {
		t.Errorf("healthcheck = %+v", hc)
	}
	if db.Image != "postgres:16" || db.Environment["POSTGRES_PASSWORD"] != "postgres" {
		t.Errorf("db = %+v", db)
	}
	if !hasWarning(warns, "db", "restart") || !hasWarning(warns, "app", "ports") {
		t.Errorf("warnings = %v", warns)
	}
}

func TestLoadMergedFiles(t *testing.T) {
	repo := writeRepo(t, map[string]string{
		"compose.yml": `
services:
  app:
    image: debian
    environment: {A: base, B: base}
    ports: ["8080"]
`,
		".devcontainer/override.yml": `
services:
  app:
    environment: {B: override}
    entrypoint: ["/bin/sh", "-c"]
  redis:
    image: redis
`,
	})
	p, _, err := Load(context.Background(), repo, []string{"../compose.yml", "override.yml"}, ".devcontainer", "app", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	app, _ := p.Service("app")
	if app.Environment["A"] != "base" || app.Environment["B"] != "override" {
		t.Errorf("env = %v", app.Environment)
	}
	if !slices.Equal(app.Entrypoint, []string{"/bin/sh", "-c"}) {
		t.Errorf("entrypoint = %q", app.Entrypoint)
	}
	if got := names(p); !slices.Equal(got, []string{"app", "redis"}) {
		t.Errorf("services = %v", got)
	}
	if p.Name != "repo" {
		t.Errorf("name = %q, want the first file's directory", p.Name)
	}
}

const fourServices = `
name: demo
services:
  app:
    image: debian
    depends_on: [api]
  api:
    image: debian
    depends_on:
      cache: {condition: service_started}
      migrate: {condition: service_completed_successfully}
  cache:
    image: redis
  migrate:
    image: debian
  unrelated:
    image: nginx
  debug:
    image: busybox
    profiles: [debug]
  tools:
    image: busybox
    profiles: [tools]
`

func TestSelection(t *testing.T) {
	for _, tc := range []struct {
		name string
		dev  string
		run  []string
		env  map[string]string
		want []string // start order
	}{
		{name: "all services", dev: "app", want: []string{"cache", "migrate", "api", "app", "unrelated"}},
		{name: "runServices subset", dev: "app", run: []string{"cache"}, want: []string{"cache", "migrate", "api", "app"}},
		{name: "runServices without deps", dev: "cache", run: []string{"unrelated"}, want: []string{"cache", "unrelated"}},
		{name: "profile from COMPOSE_PROFILES", dev: "app", env: map[string]string{"COMPOSE_PROFILES": "debug"},
			want: []string{"cache", "migrate", "api", "app", "debug", "unrelated"}},
		{name: "profiled service named in runServices", dev: "app", run: []string{"tools"},
			want: []string{"cache", "migrate", "api", "app", "tools"}},
		{name: "profiled dev service", dev: "debug", want: []string{"cache", "migrate", "api", "app", "debug", "unrelated"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := writeRepo(t, map[string]string{".devcontainer/compose.yml": fourServices})
			p, _, err := Load(context.Background(), repo, []string{"compose.yml"}, ".devcontainer", tc.dev, tc.run, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(p); !slices.Equal(got, tc.want) {
				t.Errorf("services = %v, want %v", got, tc.want)
			}
			if p.Name != "demo" || p.DevService != tc.dev {
				t.Errorf("name %q dev %q", p.Name, p.DevService)
			}
			assertOrdered(t, p)
		})
	}
}

func TestUserErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		compose string
		files   []string
		dev     string
		run     []string
		want    []string // substrings of the user message
	}{
		{name: "cycle", compose: `
services:
  app: {image: debian, depends_on: [a]}
  a: {image: debian, depends_on: [b]}
  b: {image: debian, depends_on: [a]}
`, want: []string{"cycle", "a", "b"}},
		{name: "dev service missing", compose: `
services:
  web: {image: debian}
`, dev: "app", want: []string{`"service" names "app"`, "web"}},
		{name: "runServices missing", compose: `
services:
  app: {image: debian}
`, run: []string{"nope"}, want: []string{`runServices names "nope"`}},
		{name: "file missing", compose: `services: {app: {image: debian}}`, files: []string{"missing.yml"}, want: []string{".devcontainer/missing.yml does not exist"}},
		{name: "file outside repo", compose: `services: {app: {image: debian}}`, files: []string{"../../../../../../../../../etc/hostname"}, want: []string{"outside the repository"}},
		{name: "bad yaml", compose: "services:\n  app: [", want: []string{"docker compose"}},
		{name: "unknown key", compose: `
services:
  app: {image: debian, bogus: 1}
`, want: []string{"bogus"}},
		{name: "include", compose: `
include: [/etc/other.yml]
services:
  app: {image: debian}
`, want: []string{"include and extends.file are not supported"}},
		{name: "extends file", compose: `
services:
  app:
    image: debian
    extends: {file: /etc/base.yml, service: base}
`, want: []string{"include and extends.file are not supported"}},
		{name: "env_file outside", compose: `
services:
  app: {image: debian, env_file: /etc/hostname}
`, want: []string{"env_file", "outside the repository"}},
		{name: "missing dependency in profile", compose: `
services:
  app: {image: debian, depends_on: [db]}
  db: {image: postgres, profiles: [db]}
`, want: []string{`undefined service "db"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := writeRepo(t, map[string]string{".devcontainer/compose.yml": tc.compose})
			files, dev := tc.files, tc.dev
			if files == nil {
				files = []string{"compose.yml"}
			}
			if dev == "" {
				dev = "app"
			}
			_, _, err := Load(context.Background(), repo, files, ".devcontainer", dev, tc.run, nil)
			assertUserErr(t, err, tc.want...)
			if msg, _ := usererr.Message(err); strings.Contains(msg, repo) {
				t.Errorf("message shows the host path: %s", msg)
			}
		})
	}
}

func names(p *Project) []string {
	var n []string
	for _, s := range p.Services {
		n = append(n, s.Name)
	}
	return n
}

func assertOrdered(t *testing.T, p *Project) {
	t.Helper()
	seen := map[string]bool{}
	for _, s := range p.Services {
		for d := range s.DependsOn {
			if !seen[d] {
				t.Errorf("%s starts before its dependency %s", s.Name, d)
			}
		}
		seen[s.Name] = true
	}
}

func assertUserErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	msg, ok := usererr.Message(err)
	if !ok {
		t.Fatalf("not a user error: %v", err)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("message %q does not contain %q", msg, w)
		}
	}
}

func hasWarning(ws []Warning, service, key string) bool {
	return slices.ContainsFunc(ws, func(w Warning) bool { return w.Service == service && w.Key == key })
}

func TestExtendsInSameFile(t *testing.T) {
	repo := writeRepo(t, map[string]string{".devcontainer/compose.yml": `
services:
  base:
    image: debian
    environment: {FROM_BASE: "1"}
  app:
    extends: {service: base}
    command: ["sleep", "1"]
`})
	p, _, err := Load(context.Background(), repo, []string{"compose.yml"}, ".devcontainer", "app", []string{"app"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	app, _ := p.Service("app")
	if len(p.Services) != 1 || app.Image != "debian" || app.Environment["FROM_BASE"] != "1" {
		t.Errorf("services %v app %+v", names(p), app)
	}
}
