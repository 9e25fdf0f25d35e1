package devcontainer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
)

// Command is a lifecycle command (onCreateCommand, postStartCommand, ...).
// Exactly one form is set:
//   - Shell: the string form, run by a shell (/bin/sh -c);
//   - Args: the array form, executed directly without a shell;
//   - Parallel: the object form, named commands (each a string or an array)
//     that run in parallel; order is the file's order.
type Command struct {
	Shell    string
	Args     []string
	Parallel []NamedCommand
	set      bool
}

// NamedCommand is one member of an object-form Command.
type NamedCommand struct {
	Name    string
	Command Command
}

// IsZero reports whether the command is unset (or null, or an empty string).
func (c Command) IsZero() bool {
	return !c.set || (c.Shell == "" && c.Args == nil && c.Parallel == nil)
}

// Kind is "string", "array", "object" or "" for an unset command.
func (c Command) Kind() string {
	switch {
	case c.Parallel != nil:
		return "object"
	case c.Args != nil:
		return "array"
	case c.set && c.Shell != "":
		return "string"
	}
	return ""
}

// UnmarshalJSON accepts the string, array and object forms.
func (c *Command) UnmarshalJSON(b []byte) error {
	*c = Command{}
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		return nil
	case len(b) > 0 && b[0] == '"':
		c.set = true
		return json.Unmarshal(b, &c.Shell)
	case len(b) > 0 && b[0] == '[':
		c.set = true
		c.Args = []string{}
		if err := json.Unmarshal(b, &c.Args); err != nil {
			return typeError(b, reflect.TypeFor[Command](), "a string, an array of strings or an object")
		}
		return nil
	case len(b) > 0 && b[0] == '{':
		c.set = true
		keys, err := objectKeys(b)
		if err != nil {
			return err
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		c.Parallel = []NamedCommand{}
		for _, k := range keys {
			var sub Command
			if r := bytes.TrimSpace(m[k]); len(r) > 0 && r[0] == '{' {
				return typeError(r, reflect.TypeFor[Command](), "a string or an array of strings")
			}
			if err := sub.UnmarshalJSON(m[k]); err != nil {
				return err
			}
			c.Parallel = append(c.Parallel, NamedCommand{Name: k, Command: sub})
		}
		return nil
	}
	return typeError(b, reflect.TypeFor[Command](), "a string, an array of strings or an object")
}

// MarshalJSON writes the command back in its original form.
func (c Command) MarshalJSON() ([]byte, error) {
	switch c.Kind() {
	case "object":
		var buf bytes.Buffer
		buf.WriteByte('{')
		for i, n := range c.Parallel {
			if i > 0 {
				buf.WriteByte(',')
			}
			k, _ := json.Marshal(n.Name)
			v, err := n.Command.MarshalJSON()
			if err != nil {
				return nil, err
			}
			buf.Write(k)
			buf.WriteByte(':')
			buf.Write(v)
		}
		buf.WriteByte('}')
		return buf.Bytes(), nil
	case "array":
		return json.Marshal(c.Args)
	case "string":
		return json.Marshal(c.Shell)
	}
	return []byte("null"), nil
}

// objectKeys returns the keys of the JSON object b in order (duplicates once).
func objectKeys(b []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	var keys []string
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, _ := t.(string)
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// typeError is a *json.UnmarshalTypeError whose message names the expected
// shape; Parse turns it into a positioned user message.
func typeError(b []byte, t reflect.Type, _ string) error {
	return &json.UnmarshalTypeError{Value: jsonKind(b), Type: t}
}

func jsonKind(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '"':
		return "string"
	case '[':
		return "array"
	case '{':
		return "object"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}

// PortAttributes is a value of portsAttributes / otherPortsAttributes.
type PortAttributes struct {
	Label            string `json:"label,omitempty"`
	Protocol         string `json:"protocol,omitempty"`
	OnAutoForward    string `json:"onAutoForward,omitempty"`
	RequireLocalPort *bool  `json:"requireLocalPort,omitempty"`
	ElevateIfNeeded  *bool  `json:"elevateIfNeeded,omitempty"`
}

// GPURequirement is hostRequirements.gpu: true, false, "optional" or
// {"cores": n, "memory": "8gb"}.
type GPURequirement struct {
	Required bool
	Optional bool
	Cores    int
	Memory   string
}

// UnmarshalJSON accepts every form of the spec.
func (g *GPURequirement) UnmarshalJSON(b []byte) error {
	*g = GPURequirement{}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case nil:
		return nil
	case bool:
		g.Required = v
		return nil
	case string:
		if v == "optional" {
			g.Optional = true
			return nil
		}
	case map[string]any:
		var o struct {
			Cores  int    `json:"cores"`
			Memory string `json:"memory"`
		}
		if err := json.Unmarshal(b, &o); err == nil {
			*g = GPURequirement{Required: true, Cores: o.Cores, Memory: o.Memory}
			return nil
		}
	}
	return typeError(b, reflect.TypeFor[GPURequirement](), `true, false, "optional" or an object`)
}

// HostRequirements is the minimum machine a configuration needs.
type HostRequirements struct {
	CPUs    int            `json:"cpus,omitempty"`
	Memory  string         `json:"memory,omitempty"`  // e.g. "4gb"
	Storage string         `json:"storage,omitempty"` // e.g. "32gb"
	GPU     GPURequirement `json:"gpu"`
}

// Feature is one entry of "features", in file order.
type Feature struct {
	// ID is the reference as written (OCI ref, tarball URL or ./local path).
	ID string
	// Options are the feature's options. The legacy string form ("latest",
	// "1.2") is given as {"version": value}; true as no options.
	Options map[string]any
	// Value is the value as written.
	Value any
}

func featureOptions(v any) map[string]any {
	switch v := v.(type) {
	case map[string]any:
		return v
	case string:
		return map[string]any{"version": v}
	}
	return map[string]any{}
}

// Warning is something in devcontainer.json that cove ignores or changes,
// with its position.
type Warning struct {
	Pos      string // "FILE:LINE:COL", or "FILE" when unknown
	Property string // e.g. "shutdownAction", "mounts[2]"
	Message  string
}

func (w Warning) String() string { return fmt.Sprintf("%s: %s", w.Pos, w.Message) }
