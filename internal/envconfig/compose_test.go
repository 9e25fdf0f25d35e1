package envconfig

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/usererr"
)

func TestResolveCommand(t *testing.T) {
	ep, cmd := []string{"/entry.sh"}, []string{"postgres"}
	tests := []struct {
		name             string
		entrypoint, comm []string
		want             []string
	}{
		{"image's", nil, nil, []string{"/entry.sh", "postgres"}},
		{"command replaces CMD", nil, []string{"sleep", "1"}, []string{"/entry.sh", "sleep", "1"}},
		{"entrypoint drops CMD", []string{"/bin/sh"}, nil, []string{"/bin/sh"}},
		{"both", []string{"/bin/sh", "-c"}, []string{"echo hi"}, []string{"/bin/sh", "-c", "echo hi"}},
		{"empty entrypoint clears it", []string{}, nil, []string{}},
	}
	for _, tt := range tests {
		if got := ResolveCommand(ep, cmd, tt.entrypoint, tt.comm); !reflect.DeepEqual(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestMergeEnv(t *testing.T) {
	got := MergeEnv([]string{"PATH=/bin", "A=1", "B=$A"}, map[string]string{"A": "2", "C": "$PATH"})
	want := []string{"PATH=/bin", "B=$A", "A=2", "C=$PATH"} // compose values are not expanded again
	if !reflect.DeepEqual(got, want) {
		t.Errorf("MergeEnv = %q, want %q", got, want)
	}
}

func TestImageHealthcheckOf(t *testing.T) {
	if ImageHealthcheckOf(nil) != nil || ImageHealthcheckOf(&ImageHealthcheck{}) != nil {
		t.Error("no HEALTHCHECK should give nil")
	}
	hc := ImageHealthcheckOf(&ImageHealthcheck{Test: []string{"CMD-SHELL", "true"}, Interval: time.Second})
	want := &compose.Healthcheck{Test: []string{"CMD-SHELL", "true"}, Interval: time.Second, Timeout: compose.DefaultHealthTimeout, Retries: compose.DefaultHealthRetries}
	if !reflect.DeepEqual(hc, want) {
		t.Errorf("ImageHealthcheckOf = %+v, want %+v", hc, want)
	}
	hc = ImageHealthcheckOf(&ImageHealthcheck{Test: []string{"CMD", "x"}})
	if hc.Interval != compose.DefaultHealthInterval {
		t.Errorf("default interval: %v", hc.Interval)
	}
}

func TestServiceMounts(t *testing.T) {
	s := compose.Service{Name: "db", Volumes: []compose.Mount{
		{Type: compose.MountVolume, Source: "data", Target: "/var/lib/data"},
		{Type: compose.MountVolume, Target: "/cache/x"},
		{Type: compose.MountBind, Source: "/w/repo", Target: "/src", ReadOnly: true},
		{Type: compose.MountTmpfs, Target: "/run"},
	}}
	want := []ConfigMount{
		{Type: "volume", Source: "data", Target: "/var/lib/data"},
		{Type: "volume", Source: "anon-db-cache-x", Target: "/cache/x"},
		{Type: "bind", Source: "/w/repo", Target: "/src", ReadOnly: true},
		{Type: "tmpfs", Target: "/run"},
	}
	if got := ServiceMounts(s); !reflect.DeepEqual(got, want) {
		t.Errorf("ServiceMounts = %+v, want %+v", got, want)
	}
}

func TestWithService(t *testing.T) {
	img := Image{Ref: "app:1", Digest: "sha256:a", Layers: []string{"/l"}, Config: ImageConfig{
		User: "root", Env: []string{"PATH=/bin", "A=1"}, Entrypoint: []string{"/ep"}, Cmd: []string{"x"}, WorkingDir: "/w"}}
	got := WithService(img, compose.Service{Name: "app", User: "dev", WorkingDir: "/code",
		Environment: map[string]string{"A": "2"}, Command: []string{"sleep", "infinity"}})
	want := Image{Ref: "app:1", Digest: "sha256:a", Layers: []string{"/l"}, Config: ImageConfig{
		User: "dev", Env: []string{"PATH=/bin", "A=2"}, Cmd: []string{"/ep", "sleep", "infinity"}, WorkingDir: "/code"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("WithService = %+v, want %+v", got, want)
	}
	if img.Config.Env[1] != "A=1" || img.Config.User != "root" {
		t.Errorf("WithService changed its input: %+v", img)
	}
	// Nothing set: the image's settings, its command line as CMD.
	got = WithService(img, compose.Service{Name: "app"})
	if got.Config.User != "root" || got.Config.WorkingDir != "/w" || got.Config.Entrypoint != nil || !reflect.DeepEqual(got.Config.Cmd, []string{"/ep", "x"}) {
		t.Errorf("WithService without settings = %+v", got.Config)
	}
}

func TestNewServiceState(t *testing.T) {
	img := Image{Ref: "db:1", Digest: "sha256:db", Layers: []string{"/ld"}, Config: ImageConfig{
		Env: []string{"PATH=/usr/bin", "PGDATA=/d"}, Entrypoint: []string{"docker-entrypoint.sh"}, Cmd: []string{"postgres"},
		User: "postgres", WorkingDir: "/var/lib/postgresql", Healthcheck: &ImageHealthcheck{Test: []string{"CMD", "pg_isready"}}}}
	s := compose.Service{Name: "db", Environment: map[string]string{"POSTGRES_PASSWORD": "p"},
		DependsOn: map[string]compose.Condition{"cache": compose.ConditionStarted},
		Volumes:   []compose.Mount{{Type: compose.MountVolume, Target: "/anon"}}}
	got, err := NewServiceState(s, img)
	if err != nil {
		t.Fatal(err)
	}
	want := ServiceState{Name: "db", Image: "db:1", ImageDigest: "sha256:db", Layers: []string{"/ld"},
		Env:  []string{"PATH=/usr/bin", "PGDATA=/d", "POSTGRES_PASSWORD=p"},
		User: "postgres", Command: []string{"docker-entrypoint.sh", "postgres"}, WorkingDir: "/var/lib/postgresql", Hostname: "db",
		Mounts:      []ConfigMount{{Type: "volume", Source: "anon-db-anon", Target: "/anon"}},
		DependsOn:   map[string]compose.Condition{"cache": compose.ConditionStarted},
		Healthcheck: &compose.Healthcheck{Test: []string{"CMD", "pg_isready"}, Interval: compose.DefaultHealthInterval, Timeout: compose.DefaultHealthTimeout, Retries: compose.DefaultHealthRetries}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("NewServiceState =\n%+v\nwant\n%+v", got, want)
	}
	// The compose file's settings win; its health check replaces the image's.
	s2 := s
	s2.User, s2.WorkingDir, s2.Hostname = "1000", "/srv", "pg"
	s2.Healthcheck = &compose.Healthcheck{Test: []string{"NONE"}}
	got, err = NewServiceState(s2, img)
	if err != nil || got.User != "1000" || got.WorkingDir != "/srv" || got.Hostname != "pg" || got.Healthcheck.Test[0] != "NONE" {
		t.Errorf("compose settings: %+v %v", got, err)
	}

	for _, tt := range []struct {
		name string
		s    compose.Service
		img  Image
		want string
	}{
		{"nothing to run", compose.Service{Name: "job"}, Image{Ref: "scratch:1"},
			`docker compose: service "job" has no command: its image scratch:1 has no ENTRYPOINT or CMD and the compose file sets neither`},
		{"entrypoint cleared", compose.Service{Name: "job", Entrypoint: []string{}}, Image{Ref: "x:1", Config: ImageConfig{Entrypoint: []string{"/ep"}}},
			`docker compose: service "job" has no command: its image x:1 has no ENTRYPOINT or CMD and the compose file sets neither`},
		// A name that would be a path in the runner's directory.
		{"parent directory", compose.Service{Name: "..", Command: []string{"x"}}, img, `docker compose: invalid service name ".."`},
		{"path", compose.Service{Name: "a/../../b", Command: []string{"x"}}, img, `docker compose: invalid service name "a/../../b"`},
	} {
		_, err := NewServiceState(tt.s, tt.img)
		if msg, ok := usererr.Message(err); !ok || msg != tt.want {
			t.Errorf("%s: %v, want the user error %q", tt.name, err, tt.want)
		}
	}
}

func TestValidServiceName(t *testing.T) {
	for _, good := range []string{"db", "a.b", "A-9_z", "x1", strings.Repeat("x", 63)} {
		if !ValidServiceName(good) {
			t.Errorf("%q refused", good)
		}
	}
	for _, bad := range []string{"", ".", "..", ".a", "-a", "_a", "a/b", "a b", "a\x00", "é", strings.Repeat("x", 64)} {
		if ValidServiceName(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestApplyComposeDev(t *testing.T) {
	proj := &compose.Project{Name: "p", DevService: "app", Services: []compose.Service{
		{Name: "db", Ports: []int{5432, 80}},
		{Name: "app", Ports: []int{3000, 80}, Hostname: "apphost", ExtraHosts: []string{"x:1.2.3.4"},
			Volumes: []compose.Mount{{Type: compose.MountVolume, Target: "/cache"}}},
	}}
	warns := []compose.Warning{{Service: "db", Key: "k", Message: "m"}, {Key: "top", Message: "m2"}}
	for _, hostname := range []string{"", "fromrunargs"} {
		dc := &DevcontainerState{Hostname: hostname, AddHosts: []string{"y:5.6.7.8"}, Warnings: []string{"w0"},
			Ports: Ports{Forward: []int{8080, 3000}}, Mounts: []ConfigMount{{Type: "tmpfs", Target: "/t"}}}
		ApplyComposeDev(dc, proj, warns)
		want := &DevcontainerState{Hostname: hostname, AddHosts: []string{"y:5.6.7.8", "x:1.2.3.4"},
			Warnings: []string{"w0", `service "db": k: m`, "top: m2"},
			Ports:    Ports{Forward: []int{80, 3000, 5432, 8080}},
			Mounts:   []ConfigMount{{Type: "tmpfs", Target: "/t"}, {Type: "volume", Source: "anon-app-cache", Target: "/cache"}}}
		if hostname == "" {
			want.Hostname = "apphost"
		}
		if !reflect.DeepEqual(dc, want) {
			t.Errorf("ApplyComposeDev (hostname %q) =\n%+v\nwant\n%+v", hostname, dc, want)
		}
	}
}

func TestHealthCommand(t *testing.T) {
	tests := []struct {
		test    []string
		want    HealthExec
		wantErr string
	}{
		{[]string{"CMD", "pg_isready", "-U", "x"}, HealthExec{Args: []string{"pg_isready", "-U", "x"}}, ""},
		{[]string{"CMD-SHELL", "curl -f", "localhost"}, HealthExec{Shell: "curl -f localhost"}, ""},
		{nil, HealthExec{}, "service db has no healthcheck"},
		{[]string{"NONE"}, HealthExec{}, "service db has no healthcheck"},
		{[]string{"SHELL", "x"}, HealthExec{}, `service db: healthcheck test must start with CMD, CMD-SHELL or NONE, not "SHELL"`},
		{[]string{"CMD"}, HealthExec{}, "service db: empty healthcheck test"},
		{[]string{"CMD-SHELL"}, HealthExec{}, "service db: empty healthcheck test"},
	}
	for _, tt := range tests {
		got, err := HealthCommand("db", &compose.Healthcheck{Test: tt.test})
		if tt.wantErr != "" {
			if msg, ok := usererr.Message(err); !ok || msg != tt.wantErr {
				t.Errorf("%q: %v, want the user error %q", tt.test, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q: %+v %v, want %+v", tt.test, got, err, tt.want)
		}
	}
	if _, err := HealthCommand("db", nil); err == nil {
		t.Error("nil healthcheck accepted")
	}
}
