package devcontainer

import (
	"strings"
	"testing"
)

func TestForwardPortForms(t *testing.T) {
	for in, want := range map[any]Port{
		float64(3000): {Port: 3000}, "3000": {Port: 3000}, "localhost:8080": {Port: 8080},
		"db:5432": {Host: "db", Port: 5432}, float64(65535): {Port: 65535},
	} {
		if got := parseForwardPort(in); got != want {
			t.Errorf("forwardPorts %v = %+v, want %+v", in, got, want)
		}
	}
	for _, bad := range []any{"abc", float64(70000), float64(0), "db:", ":80", "db:http", float64(30.5), true, "03000"} {
		if p := parseForwardPort(bad); p.Problem == "" {
			t.Errorf("forwardPorts %v = %+v, want a problem", bad, p)
		}
	}
}

func TestAppPortForms(t *testing.T) {
	for in, want := range map[any]int{
		float64(3000): 3000, "3000": 3000, "8080:3000": 3000, "127.0.0.1:9090:4000": 4000, "127.0.0.1::5000": 5000, "8080:3000/tcp": 3000,
	} {
		if got := parseAppPort(in); got != (Port{Port: want}) {
			t.Errorf("appPort %v = %+v, want container port %d", in, got, want)
		}
	}
	for _, bad := range []any{"abc", "8080:", "x:3000", "1:2:3:4", "8080:3000/udp", float64(70000)} {
		if p := parseAppPort(bad); p.Problem == "" {
			t.Errorf("appPort %v = %+v, want a problem", bad, p)
		}
	}
}

// Malformed entries do not fail the load (read-configuration prints the
// file as the reference CLI does): each is a warning with its position,
// and only the good entries are forwarded.
func TestPortWarnings(t *testing.T) {
	c, warns, err, _ := load(t, `{"image": "a",
  "forwardPorts": [3000, "db:5432", "abc", 70000, "db:"],
  "appPort": ["8080:3000", "127.0.0.1:9090:4000", "x:y"]}`, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range warns {
		got = append(got, w.String())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		`devcontainer.json:2:37: forwardPorts[2]: "abc" is not a port`,
		`devcontainer.json:2:44: forwardPorts[3]: 70000 is not a port`,
		`devcontainer.json:2:51: forwardPorts[4]: "db:" names no port`,
		`devcontainer.json:3:51: appPort[2]: "x:y" is not a port`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings lack %q:\n%s", want, all)
		}
	}
	m, err := Merge(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	var fwd []string
	for _, p := range m.ForwardPorts() {
		if p.Problem == "" {
			fwd = append(fwd, p.String())
		}
	}
	if strings.Join(fwd, " ") != "3000 db:5432 4000" {
		t.Errorf("forwarded = %v, want 3000 db:5432 4000", fwd)
	}
}
