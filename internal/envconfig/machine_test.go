package envconfig

import (
	"reflect"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/usererr"
)

// The expected machines are what the runner's start and startService
// built for the same state before the spec moved here (its runtime.Spec:
// process, hostname, group, mounts in order; the hosts, hostname and
// post-attach files). Paths are spelled out: they are the contract with
// agents already running.

const (
	defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	agentPrefix = "/.cove/bin/cove agent --listen-fd 3 --host-key /.cove/etc/host_key --authorized-keys /.cove/etc/runner_keys "
)

func args(s string) []string { return strings.Fields(s) }

// devSuffix ends the dev container's agent command line: remoteEnv is a
// file the agent gives users' sessions (not the container's environment),
// and login shells keep the container's PATH.
const devSuffix = " --remote-env /.cove/etc/remote-env.json --keep-profile-path"

// mountsOf lists mounts as "kind source target type opts".
func mountsOf(ms []Mount) []string {
	var out []string
	for _, m := range ms {
		out = append(out, strings.Join([]string{string(m.Kind), m.Source, m.Target, m.Type, strings.Join(m.Options, ",")}, " "))
	}
	return out
}

var devMounts = []string{
	"agent-binary  /.cove/bin/cove bind bind,ro",
	"etc  /.cove/etc bind bind,ro",
	"workspace  /workspaces bind rbind",
	"hosts  /etc/hosts bind bind,ro",
	"hostname  /etc/hostname bind bind,ro",
}

var smallResources = Resources{CPUMillis: 2000, MemoryBytes: 4 << 30, Pids: 4096}

func TestMachinesSingle(t *testing.T) {
	full := &DevcontainerState{WorkspaceFolder: "/work/here", MountTarget: "/src", ContainerEnv: []string{"PATH=/opt", "A=1"}, RemoteEnv: []string{"R=1"},
		Mounts:      []ConfigMount{{Type: "volume", Source: "cache", Target: "/cache"}, {Type: "tmpfs", Target: "/tmp/x", ReadOnly: true}, {Type: "volume", Target: "/anon"}},
		Entrypoints: []string{"/e1"}, Command: []string{"/init", "x"}, WorkingDir: "/srv", Hostname: "myhost", AddHosts: []string{"db:10.0.0.2", "v6:::1", "bad"},
		RemoteUser: "ru", UserEnvProbe: "loginShell", FeaturesPending: true, Warnings: []string{"w"}, Extensions: []string{"a.b"},
		Ports: Ports{Forward: []int{3000}},
		Hooks: lifecycle.Hooks{PostStart: []lifecycle.Command{{Shell: "s"}}, PostAttach: []lifecycle.Command{{Shell: "echo hi", Origin: "devcontainer.json"}}}}
	tests := []struct {
		name      string
		repo      string
		r         Resolved
		class     *Class
		networked bool
		installed bool
		want      Machine
		mounts    []string
	}{
		{name: "before resolution", r: Resolved{}, class: smallClass,
			want: Machine{ID: "e1", Dev: true, Hostname: "nm", Resources: smallResources, PostAttach: []byte("[]"), RemoteEnv: []byte("[]"),
				Process: Process{Args: args(agentPrefix + "--user root --workdir /workspaces --post-attach /.cove/etc/post-attach.json" + devSuffix),
					Env: []string{defaultPath, "COVE_ENVIRONMENT_ID=e1", "COVE_ENVIRONMENT_NAME=nm"}, Cwd: "/"}},
			mounts: append(devMounts[:5:5], "log  /.cove/log bind bind,ro")},
		{name: "image only", repo: "repo", r: Resolved{User: "u1", Env: []string{"HOME=/root"}, DC: &DevcontainerState{WorkspaceFolder: "/workspaces/repo"}}, networked: true,
			want: Machine{ID: "e1", Dev: true, Hostname: "nm", PostAttach: []byte("[]"), RemoteEnv: []byte("[]"), Ports: &Ports{},
				Process: Process{Args: args(agentPrefix + "--user u1 --workdir /workspaces/repo --post-attach /.cove/etc/post-attach.json" + devSuffix),
					Env: []string{"HOME=/root", defaultPath, "COVE_ENVIRONMENT_ID=e1", "COVE_ENVIRONMENT_NAME=nm"}, Cwd: "/"}},
			mounts: append(devMounts[:5:5], "resolv.conf  /etc/resolv.conf bind bind,ro", "log  /.cove/log bind bind,ro")},
		{name: "devcontainer", repo: "repo", r: Resolved{User: "ru", Env: []string{"HOME=/root"}, DC: full}, class: smallClass, networked: true,
			want: Machine{ID: "e1", Dev: true, Hostname: "myhost", Resources: smallResources,
				HostsLines: []string{"127.0.1.1\tmyhost", "10.0.0.2\tdb", "::1\tv6"},
				PostAttach: []byte(`[{"Shell":"echo hi","Args":null,"Parallel":null,"Origin":"devcontainer.json"}]`), RemoteEnv: []byte(`["R=1"]`),
				Process: Process{Args: args(agentPrefix + "--user ru --workdir /work/here --post-attach /.cove/etc/post-attach.json " +
					"--entrypoint /e1 --command /init --command x --entrypoint-workdir /srv --user-env-probe loginShell" + devSuffix),
					Env: []string{"PATH=/opt", "A=1", "COVE_ENVIRONMENT_ID=e1", "COVE_ENVIRONMENT_NAME=nm"}, Cwd: "/"},
				Ports: &full.Ports, Hooks: full.Hooks, Warnings: []string{"w"}, Extensions: []string{"a.b"}},
			mounts: append(devMounts[:5:5], "resolv.conf  /etc/resolv.conf bind bind,ro", "log  /.cove/log bind bind,ro",
				"checkout  /src bind rbind",
				"volume cache /cache bind nosuid,nodev,rbind",
				"tmpfs tmpfs /tmp/x tmpfs nosuid,nodev,ro,mode=1777",
				"volume anon-anon /anon bind nosuid,nodev,rbind",
				"features  /.cove/features bind bind")},
		// Once the features step installed them, their staging directory
		// is no longer mounted.
		{name: "features installed", repo: "repo", r: Resolved{User: "ru", DC: full}, installed: true,
			want: Machine{ID: "e1", Dev: true, Hostname: "myhost",
				HostsLines: []string{"127.0.1.1\tmyhost", "10.0.0.2\tdb", "::1\tv6"},
				PostAttach: []byte(`[{"Shell":"echo hi","Args":null,"Parallel":null,"Origin":"devcontainer.json"}]`), RemoteEnv: []byte(`["R=1"]`),
				Process: Process{Args: args(agentPrefix + "--user ru --workdir /work/here --post-attach /.cove/etc/post-attach.json " +
					"--entrypoint /e1 --command /init --command x --entrypoint-workdir /srv --user-env-probe loginShell" + devSuffix),
					Env: []string{"PATH=/opt", "A=1", "COVE_ENVIRONMENT_ID=e1", "COVE_ENVIRONMENT_NAME=nm"}, Cwd: "/"},
				Ports: &full.Ports, Hooks: full.Hooks, Warnings: []string{"w"}, Extensions: []string{"a.b"}},
			mounts: append(devMounts[:5:5], "log  /.cove/log bind bind,ro",
				"checkout  /src bind rbind",
				"volume cache /cache bind nosuid,nodev,rbind",
				"tmpfs tmpfs /tmp/x tmpfs nosuid,nodev,ro,mode=1777",
				"volume anon-anon /anon bind nosuid,nodev,rbind")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := Machines(Identity{ID: "e1", Name: "nm", RepoName: tt.repo}, &tt.r, Options{Class: tt.class, Networked: tt.networked, FeaturesInstalled: tt.installed})
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != 1 {
				t.Fatalf("%d machines, want the dev container", len(ms))
			}
			m := ms[0]
			if got := mountsOf(m.Mounts); !reflect.DeepEqual(got, tt.mounts) {
				t.Errorf("mounts:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.mounts, "\n"))
			}
			m.Mounts = nil
			tt.want.Agent = m.Agent // checked through Process.Args
			if !reflect.DeepEqual(m, tt.want) {
				t.Errorf("machine =\n%+v\nwant\n%+v", m, tt.want)
			}
			if !reflect.DeepEqual(m.Agent.Args(), m.Process.Args) {
				t.Error("Process.Args is not Agent.Args()")
			}
		})
	}
}

func TestMachinesCompose(t *testing.T) {
	r := &Resolved{User: "ru", Env: []string{"PATH=/x"}, DC: &DevcontainerState{WorkspaceFolder: "/workspaces/repo", Hostname: "apphost", AddHosts: []string{"x:1.2.3.4"},
		Mounts: []ConfigMount{{Type: "bind", Source: "/ws/repo/sub", Target: "/sub", ReadOnly: true}, {Type: "volume", Source: "anon-app-cache", Target: "/cache"}}},
		Compose: &ComposeState{Project: "p", DevService: "app", Order: []string{"db", "app", "worker"}, DevDependsOn: map[string]compose.Condition{"db": compose.ConditionStarted},
			Services: []ServiceState{
				{Name: "db", Image: "pg", Env: []string{"POSTGRES=1"}, Command: []string{"postgres"}, Hostname: "db",
					Healthcheck: &compose.Healthcheck{Test: []string{"CMD", "pg_isready"}},
					Mounts:      []ConfigMount{{Type: "volume", Source: "data", Target: "/var/lib/pg"}, {Type: "tmpfs", Target: "/run"}}},
				{Name: "worker", Image: "w", User: "wu", WorkingDir: "/wd", Env: []string{"PATH=/w"}, Command: []string{"/bin/sh", "-c", "run"}, Hostname: "wh",
					DependsOn: map[string]compose.Condition{"db": compose.ConditionHealthy}, Mounts: []ConfigMount{{Type: "bind", Source: "/ws/repo", Target: "/code"}}},
			}}}
	ms, err := Machines(Identity{ID: "e1", Name: "nm", RepoName: "repo"}, r, Options{Class: smallClass, Networked: true})
	if err != nil {
		t.Fatal(err)
	}
	svcMounts := []string{
		"agent-binary  /.cove/bin/cove bind bind,ro",
		"run  /.cove/run bind bind",
		"etc  /.cove/etc bind bind,ro",
		"hosts  /etc/hosts bind bind,ro",
		"hostname  /etc/hostname bind bind,ro",
		"resolv.conf  /etc/resolv.conf bind bind,ro",
	}
	want := []struct {
		m      Machine
		mounts []string
	}{
		{Machine{ID: "e1-db", Service: "db", Group: "e1", Hostname: "db", Resources: smallResources,
			Healthcheck: r.Compose.Services[0].Healthcheck,
			Process: Process{Args: args(agentPrefix + "--user root --workdir / --command-user root --entrypoint-workdir / --exit-with-command " +
				"--exit-code-file /.cove/run/exit-code --log-file /.cove/run/agent.log --command postgres"),
				Env: []string{"POSTGRES=1", defaultPath, "COVE_ENVIRONMENT_ID=e1", "COVE_ENVIRONMENT_NAME=nm", "COVE_SERVICE=db"}, Cwd: "/"}},
			append(svcMounts[:6:6], "volume data /var/lib/pg bind nosuid,nodev,rbind", "tmpfs tmpfs /run tmpfs nosuid,nodev,mode=1777")},
		{Machine{ID: "e1", Dev: true, Service: "app", Group: "e1", Hostname: "apphost", Resources: smallResources,
			DependsOn:  map[string]compose.Condition{"db": compose.ConditionStarted},
			HostsLines: []string{"127.0.1.1\tapphost", "1.2.3.4\tx", "127.0.0.1\tdb app worker"}, PostAttach: []byte("[]"), RemoteEnv: []byte("[]"), Ports: &r.DC.Ports,
			Process: Process{Args: args(agentPrefix + "--user ru --workdir /workspaces/repo --post-attach /.cove/etc/post-attach.json" + devSuffix),
				Env: []string{"PATH=/x", "COVE_ENVIRONMENT_ID=e1", "COVE_ENVIRONMENT_NAME=nm"}, Cwd: "/"}},
			append(devMounts[:5:5], "resolv.conf  /etc/resolv.conf bind bind,ro", "log  /.cove/log bind bind,ro",
				"bind /ws/repo/sub /sub bind nosuid,nodev,ro,rbind", "volume anon-app-cache /cache bind nosuid,nodev,rbind")},
		{Machine{ID: "e1-worker", Service: "worker", Group: "e1", Hostname: "wh", Resources: smallResources,
			DependsOn: map[string]compose.Condition{"db": compose.ConditionHealthy},
			Process: Process{Args: args(agentPrefix + "--user wu --workdir /wd --command-user wu --entrypoint-workdir /wd --exit-with-command " +
				"--exit-code-file /.cove/run/exit-code --log-file /.cove/run/agent.log --command /bin/sh --command -c --command run"),
				Env: []string{"PATH=/w", "COVE_ENVIRONMENT_ID=e1", "COVE_ENVIRONMENT_NAME=nm", "COVE_SERVICE=worker"}, Cwd: "/"}},
			append(svcMounts[:6:6], "bind /ws/repo /code bind nosuid,nodev,rbind")},
	}
	if len(ms) != len(want) {
		t.Fatalf("%d machines, want %d", len(ms), len(want))
	}
	for i, w := range want {
		m := ms[i]
		if got := mountsOf(m.Mounts); !reflect.DeepEqual(got, w.mounts) {
			t.Errorf("%s mounts:\n%s\nwant\n%s", m.ID, strings.Join(got, "\n"), strings.Join(w.mounts, "\n"))
		}
		m.Mounts, w.m.Agent = nil, m.Agent
		if !reflect.DeepEqual(m, w.m) {
			t.Errorf("machine %d =\n%+v\nwant\n%+v", i, m, w.m)
		}
	}
	if got := ms[1].HostsText(); got != "127.0.1.1\tapphost\n1.2.3.4\tx\n127.0.0.1\tdb app worker\n" {
		t.Errorf("HostsText = %q", got)
	}
	if got := ms[0].HostsText(); got != "" {
		t.Errorf("a sibling's HostsText = %q", got)
	}
}

// TestMachinesRefuseBadState: a state written before names were checked,
// or inconsistent, yields no machines and an error saying what to do.
func TestMachinesRefuseBadState(t *testing.T) {
	id := Identity{ID: "e1", Name: "nm"}
	bad := &Resolved{DC: &DevcontainerState{}, Compose: &ComposeState{DevService: "app", Order: []string{"../x", "app"},
		Services: []ServiceState{{Name: "../x", Command: []string{"x"}}}}}
	ms, err := Machines(id, bad, Options{Networked: true})
	if msg, ok := usererr.Message(err); !ok || msg != `docker compose: invalid service name "../x": rebuild the environment` || ms != nil {
		t.Errorf("invalid service name: %d machines, %v", len(ms), err)
	}
	missing := &Resolved{Compose: &ComposeState{DevService: "app", Order: []string{"db", "app"}}}
	if ms, err := Machines(id, missing, Options{Networked: true}); err == nil || ms != nil {
		t.Errorf("a service in the order but not in the state: %d machines, %v", len(ms), err)
	}
	// The dev service missing from the start order: the dev container
	// still starts, first.
	noDev := &Resolved{Compose: &ComposeState{DevService: "app", Order: []string{"db"},
		Services: []ServiceState{{Name: "db", Command: []string{"x"}}}}}
	if ms, err := Machines(id, noDev, Options{Networked: true}); err != nil || len(ms) != 2 || !ms[0].Dev || ms[1].ID != "e1-db" {
		t.Errorf("dev service not in the order: %+v, %v", ms, err)
	}
	// A service's bad volume names the service.
	vol := &Resolved{Compose: &ComposeState{DevService: "app", Order: []string{"app", "db"},
		Services: []ServiceState{{Name: "db", Mounts: []ConfigMount{{Type: "volume", Source: "/etc", Target: "/x"}}}}}}
	if _, err := Machines(id, vol, Options{Networked: true}); err == nil || !strings.HasPrefix(err.Error(), "service db: volume name \"/etc\"") {
		t.Errorf("bad volume in a service: %v", err)
	}
}

func TestWithDefaultPath(t *testing.T) {
	if got := WithDefaultPath(nil); !reflect.DeepEqual(got, []string{defaultPath}) {
		t.Errorf("no PATH: %q", got)
	}
	in := []string{"A=1", "PATH=/mine"}
	got := WithDefaultPath(in)
	if !reflect.DeepEqual(got, in) {
		t.Errorf("own PATH: %q", got)
	}
	got[0] = "changed"
	if in[0] != "A=1" {
		t.Error("WithDefaultPath returned its input")
	}
}
