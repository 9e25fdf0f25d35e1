package devcontainer

import (
	"fmt"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

// at is "FILE:LINE:COL" of the n-th (0-based) occurrence of needle in doc,
// as a refusal names it, counted here rather than written by hand.
func at(t *testing.T, doc, needle string, n int) string {
	t.Helper()
	off := -1
	for i := 0; i <= n; i++ {
		j := strings.Index(doc[off+1:], needle)
		if j < 0 {
			t.Fatalf("%q occurs fewer than %d times in the document", needle, n+1)
		}
		off += 1 + j
	}
	line, col := lineColumn([]byte(doc), off)
	return fmt.Sprintf(".devcontainer/devcontainer.json:%d:%d", line, col)
}

// refusedLines loads doc with allow and returns the lines of the refusal
// message, failing unless the configuration was refused (no Config comes
// back: nothing would be started) with a user error.
func refusedLines(t *testing.T, doc string, allow Allow) (msg string, lines []string) {
	t.Helper()
	c, _, err, _ := load(t, doc, LoadOptions{Allow: allow})
	if c != nil || err == nil {
		t.Fatalf("Load accepted the configuration (err %v)", err)
	}
	msg, ok := usererr.Message(err)
	if !ok {
		t.Fatalf("Load error = %v, want a user error", err)
	}
	if len(Refused(err)) == 0 {
		t.Fatalf("Load error carries no refusals: %v", err)
	}
	for _, l := range strings.Split(msg, "\n")[1:] {
		lines = append(lines, strings.TrimPrefix(l, "  - "))
	}
	return msg, lines
}

// TestRefusalKinds: every kind of refusal names the file, the property
// path with its index, the line and column, why, and what to do instead.
func TestRefusalKinds(t *testing.T) {
	defaultCaps := Allow{Capabilities: []string{"CHOWN", "NET_RAW"}}
	for _, tt := range []struct {
		name   string
		doc    string
		needle string // where the refusal points (first occurrence)
		path   string
		want   []string // reason and remedy
	}{
		{"host network", "{\"image\": \"a\",\n  \"runArgs\": [\"--init\", \"--network=host\"]}", `"--network=host"`, "runArgs[1]",
			[]string{"runner host's network", `list it in "forwardPorts"`}},
		{"host network, two elements", "{\"image\": \"a\",\n  \"runArgs\": [\"--net\", \"host\"]}", `"--net"`, "runArgs[0]",
			[]string{`"--net host" asks for the runner host's network`, `"forwardPorts"`}},
		{"docker socket mount", "{\"image\": \"a\",\n  \"mounts\": [\n    \"source=/var/run/docker.sock,target=/var/run/docker.sock,type=bind\"]}", `"source=`, "mounts[0]",
			[]string{"Docker socket /var/run/docker.sock would give the environment root on the runner host", "needs a class that offers it, and no class offers Docker today"}},
		{"docker socket volume", "{\"image\": \"a\",\n  \"runArgs\": [\"-v\", \"/var/run/docker.sock:/var/run/docker.sock\"]}", `"-v"`, "runArgs[0]",
			[]string{"Docker socket /var/run/docker.sock", "no class offers Docker today"}},
		{"privileged", "{\"image\": \"a\",\n  \"privileged\": true}", `"privileged"`, "privileged",
			[]string{"every capability and the host's devices", `add only the capabilities you need with "capAdd" (this runner grants: CHOWN, NET_RAW)`}},
		{"runArgs --privileged", "{\"image\": \"a\",\n  \"runArgs\": [\"--privileged\"]}", `"--privileged"`, "runArgs[0]",
			[]string{"privileged mode", `"capAdd"`, "class allows privileged mode"}},
		{"capability", "{\"image\": \"a\",\n  \"capAdd\": [\"NET_RAW\", \"sys_admin\"]}", `"sys_admin"`, "capAdd[1]",
			[]string{"capability SYS_ADMIN is not granted by this runner's classes (they grant: CHOWN, NET_RAW)", "remove SYS_ADMIN", "class that grants it"}},
		{"seccomp", "{\"image\": \"a\",\n  \"securityOpt\": [\"seccomp:unconfined\"]}", `"seccomp`, "securityOpt[0]",
			[]string{`"seccomp=unconfined" turns off the system-call filter`, "only privileged classes allow", `"capAdd": ["SYS_PTRACE"]`}},
		{"apparmor", "{\"image\": \"a\",\n  \"securityOpt\": [\"no-new-privileges\", \"apparmor=unconfined\"]}", `"apparmor`, "securityOpt[1]",
			[]string{"turns off AppArmor confinement", "remove it"}},
		{"host bind mount", "{\"image\": \"a\",\n  \"mounts\": [{\"type\": \"bind\", \"source\": \"/etc\", \"target\": \"/e\"}]}", `{"type"`, "mounts[0]",
			[]string{`bind mount of host path "/etc"`, "use type=volume"}},
		{"published port", "{\"image\": \"a\",\n  \"runArgs\": [\"-p\", \"8080:80\"]}", `"-p"`, "runArgs[0]",
			[]string{`"-p 8080:80"`, "publishes no ports", `"forwardPorts"`}},
		{"memory limit", "{\"image\": \"a\",\n  \"runArgs\": [\"--memory=4g\"]}", `"--memory`, "runArgs[0]",
			[]string{"resources come from its class", `"hostRequirements": {"memory": "8gb"}`}},
		{"unknown option", "{\"image\": \"a\",\n  \"runArgs\": [\"--frobnicate\"]}", `"--frobnicate"`, "runArgs[0]",
			[]string{"docker run option cove does not support", "runArgs accepts --cap-add"}},
		{"not an option", "{\"image\": \"a\",\n  \"runArgs\": [\"bash\"]}", `"bash"`, "runArgs[0]",
			[]string{`"bash" is not a docker run option`, `"postCreateCommand"`}},
		{"legacy feature", "{\"image\": \"a\",\n  \"features\": {\n    \"homebrew\": \"latest\"}}", `"homebrew"`, `features["homebrew"]`,
			[]string{`"homebrew" is a retired short feature id`, "https://containers.dev/implementors/features-distribution/",
				"find its replacement at https://containers.dev/features", `"./homebrew"`}},
		{"legacy feature the reference maps", "{\"image\": \"a\",\n  \"features\": {\"ghcr.io/devcontainers/features/git:1\": {},\n    \"node\": \"lts\"}}", `"node"`, `features["node"]`,
			[]string{`"node" is a retired short feature id`, `write "ghcr.io/devcontainers/features/node:1" instead`}},
		{"legacy feature renamed", "{\"image\": \"a\",\n  \"features\": {\"golang\": \"1.22\"}}", `"golang"`, `features["golang"]`,
			[]string{`write "ghcr.io/devcontainers/features/go:1" instead`}},
		{"legacy feature folded into an option", "{\"image\": \"a\",\n  \"features\": {\"maven\": {}}}", `"maven"`, `features["maven"]`,
			[]string{`write "ghcr.io/devcontainers/features/java:1": {"installMaven": true} instead`}},
		{"dockerfile without builder", "{\n  \"build\": {\"dockerfile\": \"Dockerfile\"}}", `"build"`, "build",
			[]string{"cannot build images from Dockerfiles", `use "image"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg, lines := refusedLines(t, tt.doc, defaultCaps)
			if len(lines) != 1 {
				t.Fatalf("%d problems, want 1:\n%s", len(lines), msg)
			}
			if want := at(t, tt.doc, tt.needle, 0) + ": " + tt.path + ": "; !strings.HasPrefix(lines[0], want) {
				t.Errorf("refusal does not start with %q:\n%s", want, lines[0])
			}
			if !strings.Contains(lines[0], ". To fix: ") {
				t.Errorf("refusal has no remedy:\n%s", lines[0])
			}
			for _, w := range tt.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("refusal lacks %q:\n%s", w, lines[0])
				}
			}
		})
	}
}

// TestRefusalOncePerProblem: a problem asked for in several places is one
// line that lists every place, in the file's order.
func TestRefusalOncePerProblem(t *testing.T) {
	for _, tt := range []struct {
		name, doc, problem string
		places             [][2]string // needle, path
		occurrence         []int
	}{
		{"seccomp in runArgs and securityOpt",
			"{\"image\": \"a\",\n  \"runArgs\": [\"--security-opt\", \"seccomp=unconfined\"],\n  \"securityOpt\": [\"seccomp=unconfined\"]}",
			"seccomp=unconfined", [][2]string{{`"--security-opt"`, "runArgs[0]"}, {`"seccomp=unconfined"`, "securityOpt[0]"}}, []int{0, 1}},
		{"seccomp twice in runArgs",
			"{\"image\": \"a\",\n  \"runArgs\": [\"--security-opt=seccomp=unconfined\",\n    \"--security-opt\", \"seccomp:unconfined\"]}",
			"seccomp=unconfined", [][2]string{{`"--security-opt=`, "runArgs[0]"}, {`"--security-opt"`, "runArgs[1]"}}, []int{0, 0}},
		{"host network twice",
			"{\"image\": \"a\",\n  \"runArgs\": [\"--network=host\", \"--net\", \"host\"]}",
			"host's network", [][2]string{{`"--network=host"`, "runArgs[0]"}, {`"--net"`, "runArgs[1]"}}, []int{0, 0}},
		{"capability in capAdd and runArgs",
			"{\"image\": \"a\",\n  \"capAdd\": [\"SYS_ADMIN\"],\n  \"runArgs\": [\"--cap-add=CAP_SYS_ADMIN\"]}",
			"SYS_ADMIN is not granted", [][2]string{{`"SYS_ADMIN"`, "capAdd[0]"}, {`"--cap-add`, "runArgs[0]"}}, []int{0, 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg, lines := refusedLines(t, tt.doc, Allow{})
			if len(lines) != 1 {
				t.Fatalf("%d problems, want 1 listing every place:\n%s", len(lines), msg)
			}
			first := at(t, tt.doc, tt.places[0][0], tt.occurrence[0]) + ": " + tt.places[0][1]
			also := tt.places[1][1] + " at " + at(t, tt.doc, tt.places[1][0], tt.occurrence[1])
			if want := first + " (also " + also + "): "; !strings.HasPrefix(lines[0], want) {
				t.Errorf("refusal does not start with %q:\n%s", want, lines[0])
			}
			if !strings.Contains(lines[0], tt.problem) {
				t.Errorf("refusal lacks %q:\n%s", tt.problem, lines[0])
			}
		})
	}
}

// TestRefusalAllProblems: different problems are all reported, one line
// each, in one message that counts them.
func TestRefusalAllProblems(t *testing.T) {
	doc := "{\"image\": \"a\",\n  \"features\": {\"homebrew\": \"latest\"},\n  \"runArgs\": [\"--network=host\", \"--device=/dev/kvm\"],\n" +
		"  \"mounts\": [\"source=/var/run/docker.sock,target=/var/run/docker.sock,type=bind\"],\n  \"securityOpt\": [\"seccomp=unconfined\"]}"
	msg, lines := refusedLines(t, doc, Allow{})
	if !strings.HasPrefix(msg, ".devcontainer/devcontainer.json: cove cannot run this dev container configuration (5 problems):\n") {
		t.Errorf("header:\n%s", msg)
	}
	want := []string{
		at(t, doc, `"homebrew"`, 0) + `: features["homebrew"]: `,
		at(t, doc, `"--network=host"`, 0) + ": runArgs[0]: ",
		at(t, doc, `"--device`, 0) + ": runArgs[1]: ",
		at(t, doc, `"source=`, 0) + ": mounts[0]: ",
		at(t, doc, `"seccomp`, 0) + ": securityOpt[0]: ",
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), msg)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d does not start with %q:\n%s", i, w, lines[i])
		}
	}
}

// TestMergedRefusalNamesOrigin: what a feature or the image's metadata
// asks for is refused naming it (a feature by its id), and a value the
// configuration itself also asks for lists both places.
func TestMergedRefusalNamesOrigin(t *testing.T) {
	doc := "{\"image\": \"a\",\n  \"features\": {\"ghcr.io/x/dind:1\": {}},\n  \"capAdd\": [\"NET_ADMIN\"]}"
	c, _, err, _ := load(t, doc, LoadOptions{Allow: Allow{Capabilities: []string{"NET_ADMIN"}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Merge(c, []MetadataEntry{
		{"capAdd": []any{"SYS_PTRACE"}, "mounts": []any{"source=/var/run/docker.sock,target=/var/run/docker.sock,type=bind"}},
		{"id": "ghcr.io/x/dind:1", "privileged": true, "capAdd": []any{"NET_ADMIN", "SYS_PTRACE"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = m.Check(Allow{Capabilities: []string{"NET_ADMIN"}})
	msg, ok := usererr.Message(err)
	if !ok {
		t.Fatalf("Check = %v, want a user error refusing the merged configuration", err)
	}
	for _, w := range []string{
		".devcontainer/devcontainer.json with its image's and features' metadata: cove cannot run this dev container configuration (3 problems):",
		`feature "ghcr.io/x/dind:1": privileged: privileged mode`,
		`the image's metadata (label devcontainer.metadata): capAdd[0] (also capAdd[1] at feature "ghcr.io/x/dind:1"): capability SYS_PTRACE is not granted`,
		`the image's metadata (label devcontainer.metadata): mounts[0]: mounting the Docker socket`,
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("message lacks %q:\n%s", w, msg)
		}
	}
	if strings.Contains(msg, "capability NET_ADMIN") {
		t.Errorf("message refuses NET_ADMIN, which the runner grants:\n%s", msg)
	}
}

// TestRefusalMessageBounded: a configuration with very many problems
// (a repository may list thousands of runArgs) gets a message of bounded
// size that lists the first ones and counts the rest.
func TestRefusalMessageBounded(t *testing.T) {
	args := make([]string, 10*maxListed)
	for i := range args {
		args[i] = fmt.Sprintf("%q", fmt.Sprintf("--frob%d", i))
	}
	msg, lines := refusedLines(t, `{"image": "a", "runArgs": [`+strings.Join(args, ", ")+`]}`, Allow{})
	if len(lines) != maxListed+1 {
		t.Fatalf("%d lines, want %d problems and a count of the rest:\n%s", len(lines), maxListed, msg)
	}
	if want := fmt.Sprintf("and %d more problems", len(args)-maxListed); !strings.Contains(lines[maxListed], want) {
		t.Errorf("last line %q lacks %q", lines[maxListed], want)
	}
	if !strings.Contains(msg, fmt.Sprintf("(%d problems)", len(args))) {
		t.Errorf("header does not count every problem:\n%s", msg)
	}
}
