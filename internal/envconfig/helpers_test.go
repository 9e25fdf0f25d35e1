package envconfig

import (
	"reflect"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/lifecycle"
)

func TestExpandEnv(t *testing.T) {
	tests := []struct {
		base []string
		add  map[string]string
		want []string
	}{
		{nil, nil, []string{}},
		{[]string{"PATH=/bin", "A=1", "A=2"}, nil, []string{"PATH=/bin", "A=2"}},
		{[]string{"PATH=/bin", "HOME=/root"}, map[string]string{"PATH": "/opt:${PATH}", "B": "$HOME/b", "C": "${containerEnv:HOME}", "D": "$$x $UNSET"},
			[]string{"PATH=/opt:/bin", "HOME=/root", "B=/root/b", "C=/root", "D=x "}}, // $$ names the (unset) variable "$", as os.Expand reads it
		// In name order: B sees A's new value, A does not see B's.
		{nil, map[string]string{"B": "[$A]", "A": "a$B"}, []string{"A=a", "B=[a]"}},
	}
	for _, tt := range tests {
		if got := ExpandEnv(tt.base, tt.add); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ExpandEnv(%q, %q) = %q, want %q", tt.base, tt.add, got, tt.want)
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
