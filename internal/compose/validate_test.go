package compose

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

func TestRefusedKeys(t *testing.T) {
	for _, tc := range []struct {
		key, service, want string
	}{
		{"network_mode: host", "", `services.app.network_mode: "host"`},
		{"network_mode: container:abc", "", `network_mode: "container:abc"`},
		{"pid: host", "", `services.app.pid: "host"`},
		{"ipc: host", "", `services.app.ipc: "host"`},
		{"uts: host", "", `uts: "host"`},
		{"privileged: true", "", `services.app.privileged`},
		{"cap_add: [SYS_ADMIN]", "", `cap_add: SYS_ADMIN`},
		{"cap_add: [ALL]", "", `cap_add: ALL`},
		{"devices: [/dev/kvm]", "", `services.app.devices`},
		{"security_opt: [seccomp:unconfined]", "", `security_opt: "seccomp:unconfined"`},
		{"security_opt: [apparmor=unconfined]", "", `security_opt: "apparmor=unconfined"`},
		{"userns_mode: host", "", `services.app.userns_mode`},
		{"cgroup_parent: /system", "", `cgroup_parent`},
		{"cgroup: host", "", `cgroup: "host"`},
		{"volumes: [/etc:/host-etc]", "", `bind source /etc is outside the repository`},
		{"volumes: [/var/run/docker.sock:/var/run/docker.sock]", "", `no Docker daemon`},
		{"volumes: [../..:/up]", "", `outside the repository`},
		{"volumes: [./link:/link]", "", `outside the repository`}, // symlink to /etc
		{"volumes: [./nope:/nope]", "", `bind source .devcontainer/nope does not exist`},
		{"volumes_from: [db]", "", `volumes_from`},
		{"runtime: runsc", "", `runtime`},
		{"build: {context: /etc}", "", `build.context`},
		{"build: {context: ., network: host}", "", `build.network: "host"`},
		{"{image: debian, scale: 3}", "", `scale`},
		{"use_api_socket: true", "", `use_api_socket`},
		{"secrets: [s]", "secrets: {s: {file: ./s.txt}}", `secrets`},
		{"volumes: [ext:/x]", "volumes: {ext: {external: true}}", `volumes.ext.external`},
		{"volumes: [nfs:/x]", "volumes: {nfs: {driver_opts: {type: none, o: bind, device: /etc}}}", `volumes.nfs.driver_opts`},
	} {
		t.Run(tc.key, func(t *testing.T) {
			svc := "image: debian\n    " + tc.key
			if strings.HasPrefix(tc.key, "{") || strings.HasPrefix(tc.key, "build:") {
				svc = tc.key
			}
			compose := "services:\n  app:\n    " + svc + "\n  db:\n    image: postgres\n" + tc.service + "\n"
			repo := writeRepo(t, map[string]string{".devcontainer/compose.yml": compose, ".devcontainer/s.txt": "x"})
			if err := os.Symlink("/etc", filepath.Join(repo, ".devcontainer/link")); err != nil {
				t.Fatal(err)
			}
			_, _, err := Load(context.Background(), repo, []string{"compose.yml"}, ".devcontainer", "app", nil, nil)
			assertUserErr(t, err, tc.want, "unsupported settings")
		})
	}
}

func TestRefusedAllInOneMessage(t *testing.T) {
	repo := writeRepo(t, map[string]string{".devcontainer/compose.yml": `
services:
  app:
    image: debian
    network_mode: host
    privileged: true
  db:
    image: postgres
    pid: host
    devices: [/dev/sda]
`})
	_, _, err := Load(context.Background(), repo, []string{"compose.yml"}, ".devcontainer", "app", nil, nil)
	assertUserErr(t, err,
		`services.app.network_mode`, `services.app.privileged`,
		`services.db.pid`, `services.db.devices`)
}

func TestAllowedByClass(t *testing.T) {
	repo := writeRepo(t, map[string]string{".devcontainer/compose.yml": `
services:
  app:
    image: debian
    privileged: true
    cap_add: [NET_ADMIN, CAP_SYS_PTRACE]
    cap_drop: [MKNOD]
    extra_hosts: ["host.internal:10.0.0.1"]
    security_opt: [no-new-privileges:true]
    volumes: ["../..:/workspaces", "/tmp"]
    tmpfs: [/run]
    healthcheck: {disable: true}
`})
	p, warns, err := LoadWithOptions(context.Background(), Options{
		RepoDir: repo, ConfigDir: filepath.Join(repo, ".devcontainer"), Files: []string{"compose.yml"}, DevService: "app",
		AllowedCaps: []string{"net_admin", "SYS_PTRACE"}, AllowPrivileged: true, BindRoot: filepath.Dir(repo),
	})
	if err != nil {
		t.Fatal(err)
	}
	app, _ := p.Service("app")
	if !slices.Equal(app.CapAdd, []string{"NET_ADMIN", "CAP_SYS_PTRACE"}) || !slices.Equal(app.CapDrop, []string{"MKNOD"}) {
		t.Errorf("caps add %v drop %v", app.CapAdd, app.CapDrop)
	}
	if !slices.Equal(app.ExtraHosts, []string{"host.internal:10.0.0.1"}) {
		t.Errorf("extra hosts = %v", app.ExtraHosts)
	}
	want := []Mount{
		{Type: MountBind, Source: filepath.Dir(repo), Target: "/workspaces"},
		{Type: MountVolume, Target: "/tmp"},
		{Type: MountTmpfs, Target: "/run"},
	}
	if !slices.Equal(app.Volumes, want) {
		t.Errorf("mounts = %+v, want %+v", app.Volumes, want)
	}
	if app.Healthcheck == nil || !slices.Equal(app.Healthcheck.Test, []string{"NONE"}) {
		t.Errorf("healthcheck = %+v", app.Healthcheck)
	}
	if !hasWarning(warns, "app", "security_opt") {
		t.Errorf("warnings = %v", warns)
	}
}

func TestWarningsForIgnoredKeys(t *testing.T) {
	repo := writeRepo(t, map[string]string{".devcontainer/compose.yml": `
services:
  app:
    image: debian
    container_name: my-app
    restart: always
    labels: {a: b}
    deploy: {resources: {limits: {memory: 1g}}}
    mem_limit: 1g
    logging: {driver: json-file}
    networks: [back]
  db:
    image: postgres
    network_mode: service:app
networks:
  back:
`})
	_, warns, err := Load(context.Background(), repo, []string{"compose.yml"}, ".devcontainer", "app", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"container_name", "restart", "labels", "deploy", "mem_limit", "logging"} {
		if !hasWarning(warns, "app", k) {
			t.Errorf("no warning for %s in %v", k, warns)
		}
	}
	if hasWarning(warns, "db", "network_mode") {
		t.Errorf("network_mode: service:db (the environment's network anyway) warned: %v", warns)
	}
	if !hasWarning(warns, "", "networks.back") {
		t.Errorf("no warning for networks.back in %v", warns)
	}
}

func TestDotEnvAndSymlinkedEnvFile(t *testing.T) {
	repo := writeRepo(t, map[string]string{
		".devcontainer/compose.yml": `
services:
  app:
    image: "debian:${TAG}"
    env_file: [secret.env]
    environment: [FROM_RUNNER]
`,
		".devcontainer/.env": "TAG=bookworm\nFROM_RUNNER=dotenv\n",
	})
	if err := os.Symlink("/etc/hostname", filepath.Join(repo, ".devcontainer/secret.env")); err != nil {
		t.Fatal(err)
	}
	_, _, err := Load(context.Background(), repo, []string{"compose.yml"}, ".devcontainer", "app", nil, nil)
	assertUserErr(t, err, "env_file", "outside the repository")

	if err := os.Remove(filepath.Join(repo, ".devcontainer/secret.env")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, ".devcontainer/secret.env"), []byte("S=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _, err := Load(context.Background(), repo, []string{"compose.yml"}, ".devcontainer", "app", nil,
		map[string]string{"FROM_RUNNER": "runner"})
	if err != nil {
		t.Fatal(err)
	}
	app, _ := p.Service("app")
	if app.Image != "debian:bookworm" || app.Environment["S"] != "1" || app.Environment["FROM_RUNNER"] != "runner" {
		t.Errorf("image %q env %v", app.Image, app.Environment)
	}

	// A .env symlinked outside the repository is refused.
	if err := os.Remove(filepath.Join(repo, ".devcontainer/.env")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/hostname", filepath.Join(repo, ".devcontainer/.env")); err != nil {
		t.Fatal(err)
	}
	_, _, err = Load(context.Background(), repo, []string{"compose.yml"}, ".devcontainer", "app", nil, nil)
	if _, ok := usererr.Message(err); !ok {
		t.Fatalf("err = %v, want a user error", err)
	}
}

// TestServiceNamesAndHostnames: service names name directories on the
// runner; "." would make one service's writable run directory another
// service's whole host directory (C2 of the attacker's review of the
// isolation fixes). Host names end up in /etc/hosts.
func TestServiceNamesAndHostnames(t *testing.T) {
	for name, tc := range map[string]struct{ services, want string }{
		"dot":      {"  app:\n    image: debian\n  \".\":\n    image: debian\n", `services["."].name`},
		"dotdot":   {"  app:\n    image: debian\n  \"..\":\n    image: debian\n", `services[".."].name`},
		"hostname": {"  app:\n    image: debian\n    hostname: \"a\\nb\"\n", `hostname: "a\nb" is not a valid host name`},
	} {
		t.Run(name, func(t *testing.T) {
			repo := writeRepo(t, map[string]string{".devcontainer/compose.yml": "services:\n" + tc.services})
			_, _, err := Load(context.Background(), repo, []string{"compose.yml"}, ".devcontainer", "app", nil, nil)
			assertUserErr(t, err, tc.want, "unsupported settings")
		})
	}
	repo := writeRepo(t, map[string]string{".devcontainer/compose.yml": "services:\n  app:\n    image: debian\n    hostname: web.local\n  db-1.x:\n    image: debian\n"})
	if _, _, err := Load(context.Background(), repo, []string{"compose.yml"}, ".devcontainer", "app", nil, nil); err != nil {
		t.Fatalf("valid names refused: %v", err)
	}
}

// TestSpecialFilesRefused: a FIFO where a Compose file or env_file is
// would block the runner's read forever (a slot never freed).
func TestSpecialFilesRefused(t *testing.T) {
	for name, files := range map[string][]string{"compose file": {"fifo.yml"}, "env_file": {"compose.yml"}} {
		t.Run(name, func(t *testing.T) {
			repo := writeRepo(t, map[string]string{".devcontainer/compose.yml": "services:\n  app:\n    image: debian\n    env_file: fifo.yml\n"})
			if err := syscall.Mkfifo(filepath.Join(repo, ".devcontainer/fifo.yml"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, _, err := Load(context.Background(), repo, files, ".devcontainer", "app", nil, nil)
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Fatalf("Load: %v", err)
			}
		})
	}
}

// TestRefusalNamesFileAndRemedy: a refused Compose key is named by the
// compose file (relative to the repository) and its path in it, with what
// to do instead; the configuration is not loaded.
func TestRefusalNamesFileAndRemedy(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"network_mode: host", `services.app.network_mode: "host" is not supported (only the environment's own network). To fix: remove it; services share the environment's network and reach each other by service name; to reach a port from your machine, list it in devcontainer.json "forwardPorts"`},
		{"volumes: [/var/run/docker.sock:/var/run/docker.sock]", "services.app.volumes: /var/run/docker.sock: mounting the Docker socket would give the environment root on the runner host, and there is no Docker daemon to bind. To fix: remove it; Docker inside an environment needs a class that offers it, and no class offers Docker today"},
		{"privileged: true", "services.app.privileged: privileged mode gives the service every capability and the host's devices, and no class of this runner allows it. To fix: remove it and add only the capabilities the service needs with cap_add (this runner grants: CHOWN)"},
		{"cap_add: [SYS_ADMIN]", "services.app.cap_add: SYS_ADMIN is not granted by this runner's classes (they grant: CHOWN). To fix: remove it, or ask the runner's operator for a class that grants it"},
		{"security_opt: [seccomp=unconfined]", `services.app.security_opt: "seccomp=unconfined" is not allowed: it loosens the service's confinement, which only privileged classes allow, and this runner has none. To fix: remove it`},
	} {
		t.Run(tc.key, func(t *testing.T) {
			repo := writeRepo(t, map[string]string{".devcontainer/compose.yml": "services:\n  app:\n    image: debian\n    " + tc.key + "\n"})
			p, _, err := LoadWithOptions(context.Background(), Options{RepoDir: repo, Files: []string{"compose.yml"}, ConfigDir: ".devcontainer",
				DevService: "app", AllowedCaps: []string{"CHOWN"}})
			if p != nil {
				t.Fatal("the project was loaded")
			}
			assertUserErr(t, err, ".devcontainer/compose.yml (docker compose): unsupported settings, cove cannot run these services:\n  - "+tc.want)
		})
	}
}
