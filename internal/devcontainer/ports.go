package devcontainer

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Ports in devcontainer.json:
//
//   - forwardPorts: 3000, "3000", "localhost:3000" (the dev container's
//     port) or "db:5432" (port 5432 of the Docker Compose service db).
//   - appPort (legacy): 3000, "3000", "8080:3000" or "127.0.0.1:8080:3000"
//     (Docker's -p form, [ip:][hostPort:]containerPort[/tcp]); cove
//     publishes nothing on the runner, so the container port is forwarded
//     like a forwardPorts entry.
//
// An entry that is none of these (a name without a port, 0, 70000, "db:")
// is kept with its Problem: read-configuration prints the file as written,
// as the reference CLI does, and warns (PortWarnings); resolution skips it.

// Port is an entry of forwardPorts/appPort: a port number, or "host:port".
type Port struct {
	Host string // "" for a port of the environment itself; else a Compose service
	Port int
	// Problem says why the entry is not a port ("" if it is).
	Problem string
}

func (p Port) String() string {
	if p.Host == "" {
		return strconv.Itoa(p.Port)
	}
	return p.Host + ":" + strconv.Itoa(p.Port)
}

// UnmarshalJSON accepts 3000, "3000" and "db:5432"; anything else is kept
// with its Problem.
func (p *Port) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = parseForwardPort(v)
	return nil
}

// portNumber reads a port number (1-65535) written as a JSON number or a
// string of digits.
func portNumber(v any) (int, bool) {
	switch v := v.(type) {
	case float64:
		if v >= 1 && v <= 65535 && v == float64(int(v)) {
			return int(v), true
		}
	case string:
		n, err := strconv.Atoi(v)
		if err == nil && n >= 1 && n <= 65535 && v == strconv.Itoa(n) {
			return n, true
		}
	}
	return 0, false
}

// written is v as devcontainer.json has it, for messages.
func written(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

const portForms = `write a port number (3000) or "SERVICE:PORT" ("db:5432") with a port from 1 to 65535`

// parseForwardPort reads a forwardPorts entry.
func parseForwardPort(v any) Port {
	if n, ok := portNumber(v); ok {
		return Port{Port: n}
	}
	s, ok := v.(string)
	if !ok {
		return Port{Problem: fmt.Sprintf("%s is not a port: %s", written(v), portForms)}
	}
	host, port, hasHost := strings.Cut(s, ":")
	n, ok := portNumber(port)
	switch {
	case hasHost && host == "":
		return Port{Problem: fmt.Sprintf("%q names no service before the colon: %s", s, portForms)}
	case hasHost && port == "":
		return Port{Problem: fmt.Sprintf("%q names no port after the colon: %s", s, portForms)}
	case !ok:
		return Port{Problem: fmt.Sprintf("%q is not a port: %s", s, portForms)}
	case host == "localhost" || host == "127.0.0.1":
		host = ""
	}
	return Port{Host: host, Port: n}
}

// parseAppPort reads an appPort entry, Docker's -p form: the container
// port is the one forwarded.
func parseAppPort(v any) Port {
	if n, ok := portNumber(v); ok {
		return Port{Port: n}
	}
	const forms = `write a port number (3000) or Docker's "HOST_PORT:CONTAINER_PORT" ("8080:3000") with ports from 1 to 65535`
	s, ok := v.(string)
	if !ok {
		return Port{Problem: fmt.Sprintf("%s is not a port: %s", written(v), forms)}
	}
	spec, proto, _ := strings.Cut(s, "/")
	if proto != "" && proto != "tcp" {
		return Port{Problem: fmt.Sprintf("%q: only TCP ports are forwarded", s)}
	}
	parts := strings.Split(spec, ":")
	hostOK := true
	switch len(parts) {
	case 1:
	case 2: // HOST_PORT:CONTAINER_PORT
		_, hostOK = portNumber(parts[0])
	case 3: // IP:[HOST_PORT]:CONTAINER_PORT
		_, hostOK = portNumber(parts[1])
		hostOK = hostOK || parts[1] == ""
	default:
		hostOK = false
	}
	if !hostOK {
		return Port{Problem: fmt.Sprintf("%q is not a port: %s", s, forms)}
	}
	n, ok := portNumber(parts[len(parts)-1])
	if !ok {
		return Port{Problem: fmt.Sprintf("%q is not a port: %s", s, forms)}
	}
	return Port{Port: n}
}

// readAppPort fills c.AppPort from the raw appPort (a port or a list).
func (c *Config) readAppPort() {
	v, ok := c.Raw["appPort"]
	if !ok || v == nil {
		return
	}
	list, isList := v.([]any)
	if !isList {
		list = []any{v}
	}
	for _, e := range list {
		c.AppPort = append(c.AppPort, parseAppPort(e))
	}
}

// PortWarnings are the forwardPorts and appPort entries that are not
// ports, each with its position and what to write instead.
func (c *Config) PortWarnings() []Warning {
	var out []Warning
	for i, p := range c.ForwardPorts {
		if p.Problem != "" {
			prop := fmt.Sprintf("forwardPorts[%d]", i)
			out = append(out, Warning{Pos: c.At(prop), Property: prop, Message: prop + ": " + p.Problem + "; the entry is ignored"})
		}
	}
	_, isList := c.Raw["appPort"].([]any)
	for i, p := range c.AppPort {
		if p.Problem != "" {
			prop := "appPort"
			if isList {
				prop = fmt.Sprintf("appPort[%d]", i)
			}
			out = append(out, Warning{Pos: c.At(prop), Property: prop, Message: prop + ": " + p.Problem + "; the entry is ignored"})
		}
	}
	return out
}
