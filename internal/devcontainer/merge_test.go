package devcontainer

import (
	"reflect"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

func TestMergeRules(t *testing.T) {
	c, _, err, _ := load(t, `{"image": "a", "remoteUser": "me", "containerEnv": {"B": "cfg"},
	  "remoteEnv": {"R": null}, "capAdd": ["SYS_PTRACE"], "postCreateCommand": {"x": "cfg-x", "y": ["cfg", "y"]},
	  "forwardPorts": [3000], "mounts": ["type=volume,source=cfg,target=/data"],
	  "customizations": {"vscode": {"extensions": ["c"]}}, "features": {"r.io/f/b": {}, "r.io/f/a": "1"}}`,
		LoadOptions{Allow: Allow{Capabilities: []string{"SYS_PTRACE", "NET_RAW"}}})
	if err != nil {
		t.Fatal(err)
	}
	label := `[{"remoteUser": "img", "containerUser": "imguser", "containerEnv": {"A": "img", "B": "img"}, "remoteEnv": {"R": "img"},
	  "capAdd": ["NET_RAW", "SYS_PTRACE"], "postCreateCommand": "img-pc", "onCreateCommand": ["img", "oc"],
	  "forwardPorts": ["localhost:3000", 8080], "mounts": [{"type": "volume", "source": "img", "target": "/data"}, "type=volume,source=o,target=/other"],
	  "customizations": {"vscode": {"extensions": ["i"]}}, "hostRequirements": {"memory": "2gb"}},
	  {"id": "ghcr.io/f/f:1", "postCreateCommand": "feat-pc", "init": true, "hostRequirements": {"cpus": 2, "gpu": true}}]`
	m, err := MergeImageMetadata(c, label)
	if err != nil {
		t.Fatal(err)
	}
	if m.RemoteUser() != "me" || m.ContainerUser() != "imguser" {
		t.Errorf("users = %q %q", m.RemoteUser(), m.ContainerUser())
	}
	if got := m.ContainerEnv(); !reflect.DeepEqual(got, map[string]string{"A": "img", "B": "cfg"}) {
		t.Errorf("containerEnv = %v", got)
	}
	if got := m.RemoteEnv(); len(got) != 1 || got["R"] != nil {
		t.Errorf("remoteEnv = %v, want R unset by the config", got)
	}
	if got := m.CapAdd(); !reflect.DeepEqual(got, []string{"NET_RAW", "SYS_PTRACE"}) {
		t.Errorf("capAdd = %v", got)
	}
	if !m.Init() || m.Privileged() {
		t.Errorf("init/privileged = %v %v", m.Init(), m.Privileged())
	}
	l := m.Lifecycle()
	var pc []string
	for _, x := range l.PostCreate {
		pc = append(pc, x.Origin+"="+x.Command.Kind())
	}
	if !reflect.DeepEqual(pc, []string{"image metadata=string", "ghcr.io/f/f:1=string", "devcontainer.json=object"}) {
		t.Errorf("postCreate = %v", pc)
	}
	if p := l.PostCreate[2].Command.Parallel; len(p) != 2 || p[0].Name != "x" || p[1].Command.Args[0] != "cfg" {
		t.Errorf("object command = %+v", p)
	}
	if len(l.OnCreate) != 1 || !reflect.DeepEqual(l.OnCreate[0].Command.Args, []string{"img", "oc"}) || l.WaitFor != "updateContentCommand" {
		t.Errorf("onCreate = %+v waitFor %q", l.OnCreate, l.WaitFor)
	}
	if got := m.ForwardPorts(); !reflect.DeepEqual(got, []Port{{Port: 3000}, {Port: 8080}}) {
		t.Errorf("forwardPorts = %v", got)
	}
	mounts := m.Mounts()
	if len(mounts) != 2 || mounts[0].Target != "/other" || mounts[1].Source != "cfg" {
		t.Errorf("mounts = %+v, want /other then the config's /data", mounts)
	}
	if got := m.Customizations()["vscode"]; len(got) != 2 {
		t.Errorf("customizations = %v", got)
	}
	hr := m.HostRequirements()
	if hr == nil || hr.CPUs != 2 || ParseBytes(hr.Memory) != 2<<30 || !hr.GPU.Required {
		t.Errorf("hostRequirements = %+v", hr)
	}
	if f := m.Features(); len(f) != 2 || f[0].ID != "r.io/f/b" || f[1].Options["version"] != "1" {
		t.Errorf("features = %+v", f)
	}
	// The image adds NET_RAW (allowed) but the check still sees every entry.
	if err := m.Check(Allow{Capabilities: []string{"SYS_PTRACE"}}); err == nil || !strings.Contains(err.Error(), "NET_RAW") {
		t.Errorf("Check = %v, want NET_RAW refused", err)
	}
	if err := m.Check(Allow{Capabilities: []string{"SYS_PTRACE", "NET_RAW"}}); err != nil {
		t.Errorf("Check = %v", err)
	}
}

func TestParseImageMetadata(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		fail bool
	}{{"", 0, false}, {`{"remoteUser":"a"}`, 1, false}, {`[{},{"a":1}]`, 2, false}, {`[1]`, 0, true}, {`"x"`, 0, true}, {`{`, 0, true}} {
		got, err := ParseImageMetadata(tt.in)
		if _, ok := usererr.Message(err); tt.fail != ok || len(got) != tt.n {
			t.Errorf("ParseImageMetadata(%q) = %v, %v", tt.in, got, err)
		}
	}
}

func TestChooseClass(t *testing.T) {
	classes := []Class{
		{ID: "large", CPUs: 8, Memory: 32 << 30, Storage: 100 << 30},
		{ID: "small", CPUs: 2, Memory: 4 << 30, Storage: 30 << 30},
		{ID: "medium", CPUs: 4, Memory: 16 << 30, Storage: 50 << 30},
		{ID: "gpu", CPUs: 16, Memory: 64 << 30, Storage: 100 << 30, GPUs: 1},
	}
	for _, tt := range []struct {
		req  *HostRequirements
		want string
		err  string
	}{
		{nil, "small", ""},
		{&HostRequirements{CPUs: 3}, "medium", ""},
		{&HostRequirements{Memory: "8GB"}, "medium", ""},
		{&HostRequirements{Memory: "17179869184", Storage: "60gb"}, "large", ""},
		{&HostRequirements{GPU: GPURequirement{Optional: true}}, "small", ""},
		{&HostRequirements{GPU: GPURequirement{Required: true}}, "gpu", ""},
		{&HostRequirements{CPUs: 32, Memory: "1tb"}, "", "hostRequirements: no environment class has 32 CPUs, 1 TB of memory"},
	} {
		got, err := ChooseClass(tt.req, classes)
		if tt.err != "" {
			if msg, ok := usererr.Message(err); !ok || !strings.Contains(msg, tt.err) {
				t.Errorf("ChooseClass(%+v) error = %v", tt.req, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ChooseClass(%+v) = %q, %v; want %q", tt.req, got, err, tt.want)
		}
	}
}

func TestCommandForms(t *testing.T) {
	c, _, err, _ := load(t, `{"image": "a", "onCreateCommand": "make", "updateContentCommand": ["a", "b"],
	  "postCreateCommand": {"z": "1", "a": ["2"]}, "postStartCommand": null, "postAttachCommand": ""}`, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.OnCreateCommand.Shell != "make" || c.UpdateContentCommand.Kind() != "array" || c.PostCreateCommand.Parallel[0].Name != "z" ||
		!c.PostStartCommand.IsZero() || !c.PostAttachCommand.IsZero() {
		t.Fatalf("commands = %+v", c)
	}
	b, err := c.PostCreateCommand.MarshalJSON()
	if err != nil || string(b) != `{"z":"1","a":["2"]}` {
		t.Fatalf("MarshalJSON = %s, %v", b, err)
	}
}
