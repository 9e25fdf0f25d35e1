package devcontainer

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/tailscale/hujson"

	"github.com/covedev/cove/internal/usererr"
)

// Config is a devcontainer.json, typed. Fields mirror the properties of
// https://containers.dev/implementors/json_reference/; pointers and zero
// values mean "not set". Raw keeps the whole document (after legacy folding
// and variable substitution when it comes from Read or Load) so that later
// stages can read properties cove does not type.
type Config struct {
	// Path is the file the configuration was read from.
	Path string

	Name  string `json:"name"`
	Image string `json:"image"`
	// Build, DockerFile and Context are a Dockerfile configuration (see
	// DockerBuild); DockerComposeFile, Service and RunServices a Compose
	// one (see Compose).
	Build             map[string]any `json:"build"`
	DockerFile        string         `json:"dockerFile"`
	Context           string         `json:"context"`
	DockerComposeFile any            `json:"dockerComposeFile"`
	Service           string         `json:"service"`
	RunServices       []string       `json:"runServices"`

	WorkspaceFolder string `json:"workspaceFolder"`
	// WorkspaceMount is the raw workspaceMount string; only its target is
	// honoured (see Workspace).
	WorkspaceMount *string `json:"workspaceMount"`

	ContainerEnv        map[string]string  `json:"containerEnv"`
	RemoteEnv           map[string]*string `json:"remoteEnv"` // nil value: unset the variable
	ContainerUser       string             `json:"containerUser"`
	RemoteUser          string             `json:"remoteUser"`
	UpdateRemoteUserUID *bool              `json:"updateRemoteUserUID"`
	UserEnvProbe        string             `json:"userEnvProbe"`
	OverrideCommand     *bool              `json:"overrideCommand"`
	Init                *bool              `json:"init"`
	Privileged          *bool              `json:"privileged"`
	CapAdd              []string           `json:"capAdd"`
	SecurityOpt         []string           `json:"securityOpt"`
	Mounts              []Mount            `json:"mounts"`
	RunArgs             []string           `json:"runArgs"`

	ForwardPorts         []Port                    `json:"forwardPorts"`
	PortsAttributes      map[string]PortAttributes `json:"portsAttributes"`
	OtherPortsAttributes *PortAttributes           `json:"otherPortsAttributes"`
	// AppPort is the legacy appPort, read like forwardPorts (cove publishes
	// no host ports; the ports are forwarded through its port proxy).
	AppPort []Port `json:"-"`

	HostRequirements *HostRequirements `json:"hostRequirements"`
	Customizations   map[string]any    `json:"customizations"`
	ShutdownAction   string            `json:"shutdownAction"`

	// Features in file order.
	Features                    []Feature `json:"-"`
	OverrideFeatureInstallOrder []string  `json:"overrideFeatureInstallOrder"`

	InitializeCommand    Command `json:"initializeCommand"`
	OnCreateCommand      Command `json:"onCreateCommand"`
	UpdateContentCommand Command `json:"updateContentCommand"`
	PostCreateCommand    Command `json:"postCreateCommand"`
	PostStartCommand     Command `json:"postStartCommand"`
	PostAttachCommand    Command `json:"postAttachCommand"`
	WaitFor              string  `json:"waitFor"`

	// Run is what the safe subset of runArgs maps to.
	Run RunArgs `json:"-"`
	// Workspace is where the repository is in the container (set by Read).
	Workspace Workspace `json:"-"`

	// Raw is the whole document, decoded as standard JSON.
	Raw map[string]any `json:"-"`

	src      *source
	subst    *substituter
	explicit bool      // the path was given, not discovered
	problems []Refusal // runArgs refused (parseRunArgs)
}

// Workspace is the reference CLI's "workspace" object of read-configuration.
type Workspace struct {
	// WorkspaceFolder is the folder in the container where tools open the
	// repository: workspaceFolder, or /workspaces/<repository folder name>.
	WorkspaceFolder string `json:"workspaceFolder,omitempty"`
	// WorkspaceMount is the Docker --mount string the reference CLI would
	// use. cove bind-mounts its own checkout; only the target is honoured.
	WorkspaceMount string `json:"workspaceMount,omitempty"`
	// MountTarget is where cove mounts the repository's checkout.
	MountTarget string `json:"-"`
}

// source remembers positions in the file for messages.
type source struct {
	name  string
	data  []byte
	pos   map[string]int      // property path → byte offset of its value (or name)
	order map[string][]string // object path → keys in file order
}

// walk records the offset of every value under path ("a.b", "a[2]"): an
// object member's at its name.
func (s *source) walk(path string, v *hujson.Value) {
	walkJSON(path, v, func(p string, v *hujson.Value, parent string, m *hujson.ObjectMember) {
		switch {
		case m != nil:
			s.pos[p] = m.Name.StartOffset
			s.order[parent] = append(s.order[parent], memberKey(m))
		case p != "":
			if _, ok := s.pos[p]; !ok {
				s.pos[p] = v.StartOffset
			}
		}
	})
}

// walkJSON calls fn for v (at path) and every value under it, parents
// first, in file order. For an object member's value, parent is the
// object's path and m the member; otherwise m is nil.
func walkJSON(path string, v *hujson.Value, fn func(path string, v *hujson.Value, parent string, m *hujson.ObjectMember)) {
	var rec func(path string, v *hujson.Value, parent string, m *hujson.ObjectMember)
	rec = func(path string, v *hujson.Value, parent string, m *hujson.ObjectMember) {
		fn(path, v, parent, m)
		switch t := v.Value.(type) {
		case *hujson.Object:
			for i := range t.Members {
				m := &t.Members[i]
				p := memberKey(m)
				if path != "" {
					p = path + "." + p
				}
				rec(p, &m.Value, path, m)
			}
		case *hujson.Array:
			for i := range t.Elements {
				rec(fmt.Sprintf("%s[%d]", path, i), &t.Elements[i], path, nil)
			}
		}
	}
	rec(path, v, "", nil)
}

// memberKey is an object member's name, unquoted.
func memberKey(m *hujson.ObjectMember) string {
	var key string
	if lit, ok := m.Name.Value.(hujson.Literal); ok {
		_ = json.Unmarshal(lit, &key)
	}
	return key
}

// at is "FILE:LINE:COL" for a property path, or its closest known parent.
func (s *source) at(path string) string {
	if s == nil {
		return ""
	}
	for p := path; p != ""; {
		if off, ok := s.pos[p]; ok {
			line, col := lineColumn(s.data, off)
			return fmt.Sprintf("%s:%d:%d", s.name, line, col)
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return s.name
}

// At returns "FILE:LINE:COL" of a property ("mounts[1]", "containerEnv.A").
func (c *Config) At(path string) string {
	if c.src == nil {
		return c.Path
	}
	return c.src.at(path)
}

// decode fills the typed fields from Raw.
func (c *Config) decode() error {
	b, err := json.Marshal(c.Raw)
	if err != nil {
		return fmt.Errorf("marshal config: %w", err)
	}
	keep := *c
	type plain Config
	p := (*plain)(c)
	*p = plain{}
	c.Path, c.Raw, c.src, c.subst, c.explicit, c.Workspace = keep.Path, keep.Raw, keep.src, keep.subst, keep.explicit, keep.Workspace
	if err := json.Unmarshal(b, p); err != nil {
		return c.typeErr(err)
	}
	c.readAppPort()
	if v, ok := c.Raw["features"]; ok && v != nil {
		m, ok := v.(map[string]any)
		if !ok {
			return usererr.New("%s: %q must be an object, not %s", c.At("features"), "features", jsonType(v))
		}
		var keys []string
		if c.src != nil {
			keys = c.src.order["features"]
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if fv, ok := m[k]; ok && !seen[k] {
				seen[k] = true
				c.Features = append(c.Features, Feature{ID: k, Options: featureOptions(fv), Value: fv})
			}
		}
		for k, fv := range m { // documents built in memory have no order
			if !seen[k] {
				c.Features = append(c.Features, Feature{ID: k, Options: featureOptions(fv), Value: fv})
			}
		}
	}
	c.Run, c.problems = parseRunArgs(c.RunArgs, c.Loc)
	if c.src != nil {
		// Raw is a map: restore the file's order of object-form commands.
		for hook, cmd := range map[string]*Command{"initializeCommand": &c.InitializeCommand,
			"onCreateCommand": &c.OnCreateCommand, "updateContentCommand": &c.UpdateContentCommand,
			"postCreateCommand": &c.PostCreateCommand, "postStartCommand": &c.PostStartCommand,
			"postAttachCommand": &c.PostAttachCommand} {
			order := c.src.order[hook]
			slices.SortStableFunc(cmd.Parallel, func(a, b NamedCommand) int {
				return slices.Index(order, a.Name) - slices.Index(order, b.Name)
			})
		}
	}
	return nil
}

func withField(err error, field string) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		te.Field = field
	}
	return err
}

// typeErr turns a JSON type error into "FILE:L:C: "prop" must be X, not Y".
func (c *Config) typeErr(err error) error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return usererr.Wrap(err, "%s: %v", c.Path, err)
	}
	field := jsonPath(te.Field)
	want := "a valid value"
	if te.Type != nil {
		want = describeType(te.Type)
	}
	got := map[string]string{"string": "a string", "number": "a number", "bool": "a boolean",
		"array": "an array", "object": "an object", "null": "null"}[te.Value]
	if got == "" {
		got = te.Value
		if strings.HasPrefix(got, "number") {
			got = "a number (" + strings.TrimPrefix(strings.TrimPrefix(got, "number"), " ") + ")"
		}
	}
	return usererr.Wrap(err, "%s: %q must be %s, not %s", c.At(field), field, want, got)
}

// jsonPath turns encoding/json's "mounts.1.target" into "mounts[1].target".
func jsonPath(f string) string {
	parts := strings.Split(f, ".")
	var b strings.Builder
	for i, p := range parts {
		if _, err := strconv.Atoi(p); err == nil && i > 0 {
			b.WriteString("[" + p + "]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

func describeType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case reflect.TypeFor[Command]():
		return "a string, an array of strings or an object"
	case reflect.TypeFor[Mount]():
		return `a string or an object with "type", "source" and "target"`
	case reflect.TypeFor[Port]():
		return `a port number or a "host:port" string`
	case reflect.TypeFor[GPURequirement]():
		return `true, false, "optional" or an object`
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int64, reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(describeType(t.Elem()), "a "), "an ") + "s"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Interface:
		return "a value"
	}
	return t.String()
}
