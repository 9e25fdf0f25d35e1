package envconfig

import (
	"reflect"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/lifecycle"
)

// TestContainerEnv: the features' containerEnv expands like Dockerfile
// ENV lines; the configuration's expands only variables the image or a
// feature sets and keeps every other reference as written, with a
// warning that says what to write instead.
func TestContainerEnv(t *testing.T) {
	tests := []struct {
		name     string
		base     []string
		features []map[string]string
		config   map[string]string
		want     []string
		warns    []string // substrings, one per warning
	}{
		{"nothing", nil, nil, nil, []string{}, nil},
		{"image duplicates", []string{"PATH=/bin", "A=1", "A=2"}, nil, nil, []string{"PATH=/bin", "A=2"}, nil},
		{"features in order, Docker ENV style",
			[]string{"PATH=/bin"},
			[]map[string]string{{"PATH": "/f1:${PATH}", "LIB": "/l:$LIB"}, {"PATH": "/f2:$PATH", "X": "${containerEnv:PATH}"}},
			nil,
			[]string{"PATH=/f2:/f1:/bin", "LIB=/l:", "X=${containerEnv:PATH}"}, nil},
		{"configuration: known variables expand, the rest stays",
			[]string{"PATH=/bin", "HOME=/root"},
			[]map[string]string{{"TOOL": "/opt/tool"}},
			map[string]string{"PATH": "/opt:${PATH}", "B": "$HOME/b", "T": "${TOOL}/bin", "C": "${containerEnv:HOME}",
				"U": "${foo:bar} ${localEnv} $UNSET ${UNSET2}", "D": "$$x", "L": "plain"},
			[]string{"PATH=/opt:/bin", "HOME=/root", "TOOL=/opt/tool", "B=/root/b", "C=${containerEnv:HOME}", "D=$$x", "L=plain", "T=/opt/tool/bin",
				"U=${foo:bar} ${localEnv} $UNSET ${UNSET2}"},
			[]string{"containerEnv.C: ${containerEnv:HOME} is kept as written", "write ${HOME}",
				"containerEnv.D: $x kept as written", "containerEnv.U: ${foo:bar}, ${localEnv}, $UNSET, ${UNSET2} kept as written"}},
		{"configuration values do not see each other",
			nil, nil, map[string]string{"B": "[$A]", "A": "a"}, []string{"A=a", "B=[$A]"}, []string{"containerEnv.B: $A kept"}},
	}
	for _, tt := range tests {
		got, warns := ContainerEnv(tt.base, tt.features, tt.config)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: ContainerEnv = %q, want %q", tt.name, got, tt.want)
		}
		joined := strings.Join(warns, "\n")
		for _, w := range tt.warns {
			if !strings.Contains(joined, w) {
				t.Errorf("%s: warnings %q lack %q", tt.name, warns, w)
			}
		}
		if len(tt.warns) == 0 && len(warns) > 0 {
			t.Errorf("%s: unexpected warnings %q", tt.name, warns)
		}
	}
	if m := EnvMap([]string{"A=1", "B", "A=2=3"}); !reflect.DeepEqual(m, map[string]string{"A": "2=3", "B": ""}) {
		t.Errorf("EnvMap = %v", m)
	}
}

func TestHooks(t *testing.T) {
	l := devcontainer.Lifecycle{
		OnCreate: []devcontainer.LifecycleCommand{{Origin: "o", Command: devcontainer.Command{Shell: "s"}}},
		PostStart: []devcontainer.LifecycleCommand{{Origin: "p", Command: devcontainer.Command{Parallel: []devcontainer.NamedCommand{
			{Name: "a", Command: devcontainer.Command{Args: []string{"x"}}}}}}},
		WaitFor: "onCreateCommand"}
	want := lifecycle.Hooks{OnCreate: []lifecycle.Command{{Shell: "s", Origin: "o"}}, UpdateContent: []lifecycle.Command{}, PostCreate: []lifecycle.Command{},
		PostStart:  []lifecycle.Command{{Parallel: map[string]lifecycle.Command{"a": {Args: []string{"x"}}}, Origin: "p"}},
		PostAttach: []lifecycle.Command{}, WaitFor: "onCreateCommand"}
	if got := Hooks(l); !reflect.DeepEqual(got, want) {
		t.Errorf("Hooks = %+v, want %+v", got, want)
	}
	if !HooksEmpty(lifecycle.Hooks{PostAttach: []lifecycle.Command{{Shell: "x"}}}) || HooksEmpty(want) {
		t.Error("HooksEmpty: postAttachCommand runs per session, the others at start")
	}
	cust := map[string][]any{"vscode": {map[string]any{"extensions": []any{"a", 1, "b"}}, "junk", map[string]any{"extensions": []any{"c"}}}}
	if got := Extensions(cust); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("Extensions = %q", got)
	}
}

func TestFeatureEntry(t *testing.T) {
	e, err := FeatureEntry(Feature{ID: "ghcr.io/x/y:1", Metadata: []byte(`{"id":"y","entrypoint":"/e.sh"}`)})
	if err != nil || e["id"] != "ghcr.io/x/y:1" || e["entrypoint"] != "/e.sh" {
		t.Errorf("FeatureEntry = %v, %v; want the id as written", e, err)
	}
	if e, err := FeatureEntry(Feature{ID: "a", Metadata: []byte(`null`)}); err != nil || e["id"] != "a" {
		t.Errorf("null metadata: %v, %v", e, err)
	}
	if _, err := FeatureEntry(Feature{ID: "a", Metadata: []byte(`[1]`)}); err == nil || !strings.Contains(err.Error(), "feature a") {
		t.Errorf("metadata that is not an object: %v", err)
	}
}

func TestAllow(t *testing.T) {
	a := Allow(true, false)
	if !a.Build || a.Compose || a.Privileged || len(a.Capabilities) != len(Capabilities) {
		t.Errorf("Allow = %+v", a)
	}
	a.Capabilities[0] = "SYS_ADMIN"
	if Capabilities[0] == "SYS_ADMIN" {
		t.Error("Allow shares its capability list with the package's")
	}
}
