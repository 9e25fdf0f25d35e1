package deptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/testutil"
)

// ban forbids depending on an import path.
type ban struct {
	// path is an import path; one starting with "internal/" is inside this
	// module.
	path string
	// subs bans the packages below path too.
	subs bool
	// direct: only a file's own import counts. For packages that nearly
	// every program reaches anyway (os imports syscall), so that only the
	// checked code's own use of them is refused.
	direct bool
	why    string
}

// rule is what one package (or some of its files) may not depend on.
type rule struct {
	pkg string // module-relative, e.g. "internal/cli"
	// skip names files the rule does not cover.
	skip func(file string) bool
	// optional: the package may not exist (yet); otherwise a missing
	// package fails the test, so that a renamed one is not silently
	// unchecked.
	optional bool
	bans     []ban
}

// exception allows one file one import that a rule bans.
type exception struct {
	file, imp string // module-relative file, import path
	why       string
}

var agentServer = []ban{{path: "internal/agent",
	why: "the in-environment agent server; clients speak its wire protocol through internal/agent/agentproto"}}

// hostBans keep pure packages pure: table-testable without root, no host
// effects, usable from anywhere.
var hostBans = []ban{
	{path: "internal/runtime", subs: true, why: "host package (containers)"},
	{path: "internal/netenv", subs: true, why: "host package (network namespaces)"},
	{path: "internal/image", subs: true, why: "host package (image store)"},
	{path: "internal/content", subs: true, why: "host package (clones)"},
	{path: "internal/confine", subs: true, why: "host package (host file system)"},
	{path: "internal/build", subs: true, why: "host package (image builds)"},
	{path: "internal/runner", subs: true, why: "host package (the runner)"},
	{path: "internal/server", subs: true, why: "the control plane"},
	{path: "internal/store", subs: true, why: "the control plane's database"},
	{path: "github.com/vishvananda/netlink", subs: true, why: "host networking"},
	{path: "github.com/mdlayher/netlink", subs: true, why: "host networking"},
	{path: "github.com/google/nftables", subs: true, why: "host firewall"},
	{path: "os/exec", direct: true, why: "runs host programs"},
	{path: "syscall", direct: true, why: "host system calls"},
	{path: "golang.org/x/sys/unix", direct: true, why: "host system calls"},
}

var rules = []rule{
	{pkg: "internal/cli", skip: func(f string) bool { return f == "agentcmd.go" }, bans: agentServer},
	{pkg: "internal/agentclient", bans: agentServer},
	{pkg: "internal/agent/agentproto", bans: append(slices.Clone(agentServer), hostBans...)},
	{pkg: "internal/devcontainer", bans: hostBans},
	{pkg: "internal/compose", bans: hostBans},
	{pkg: "internal/lifecycle", bans: hostBans},
	{pkg: "internal/envconfig", bans: hostBans},
	{pkg: "internal/guest", bans: hostBans},
	{pkg: "internal/passwd", bans: hostBans},
}

var exceptions = []exception{
	{file: "internal/devcontainer/devcontainer.go", imp: "syscall",
		why: "errors.Is(err, syscall.ENOTDIR) only: an error value io/fs has no name for; no system call"},
}

// TestDeps fails when a package gains an import its rule forbids.
func TestDeps(t *testing.T) {
	testutil.RequireTool(t, "go")
	root, mod := module(t, ".")
	g := load(t, root)
	problems := check(root, mod, g, rules, exceptions)
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("checked %d rules over %d packages", len(rules), len(g))
}

// TestDepsCatchesForbiddenImports performs what the test guards against,
// in a module of its own: a user CLI file that imports the agent (directly,
// or through another package), a pure package that runs programs, and an
// excused import no longer needed. Each is reported with the file and the
// import; the agent subcommand's file and the agentproto import are not.
func TestDepsCatchesForbiddenImports(t *testing.T) {
	testutil.RequireTool(t, "go")
	dir := t.TempDir()
	const mod = "example.test/m"
	files := map[string]string{
		"go.mod":                         "module " + mod + "\n\ngo 1.22\n",
		"internal/agent/agent.go":        "package agent\n\nconst X = 1\n",
		"internal/agent/agentproto/p.go": "package agentproto\n\nconst Y = 2\n",
		"internal/relay/relay.go":        "package relay\n\nimport \"" + mod + "/internal/agent\"\n\nconst Z = agent.X\n",
		"internal/cli/agentcmd.go":       "package cli\n\nimport \"" + mod + "/internal/agent\"\n\nconst A = agent.X\n",
		"internal/cli/ok.go":             "package cli\n\nimport \"" + mod + "/internal/agent/agentproto\"\n\nconst B = agentproto.Y\n",
		"internal/cli/bad.go":            "package cli\n\nimport \"" + mod + "/internal/agent\"\n\nconst C = agent.X\n",
		"internal/cli/sneaky.go":         "package cli\n\nimport \"" + mod + "/internal/relay\"\n\nconst D = relay.Z\n",
		"internal/cli/bad_test.go":       "package cli\n\nimport \"" + mod + "/internal/agent\"\n\nconst E = agent.X\n",
		"internal/pure/pure.go":          "package pure\n\nimport \"os/exec\"\n\nvar F = exec.Command\n",
		"internal/pure/os.go":            "package pure\n\nimport \"os\"\n\nvar G = os.Getpid\n",
	}
	for name, text := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root, gotMod := module(t, dir)
	if gotMod != mod {
		t.Fatalf("module %q, want %q", gotMod, mod)
	}
	g := load(t, root)
	testRules := []rule{
		{pkg: "internal/cli", skip: func(f string) bool { return f == "agentcmd.go" }, bans: agentServer},
		{pkg: "internal/pure", bans: hostBans[len(hostBans)-3:]},
		{pkg: "internal/missing", bans: agentServer},
		{pkg: "internal/later", optional: true, bans: agentServer},
	}
	excused := []exception{{file: "internal/pure/gone.go", imp: "syscall", why: "test"}}
	got := check(root, mod, g, testRules, excused)
	want := []string{
		"internal/cli/bad.go imports " + mod + "/internal/agent: forbidden for internal/cli (the in-environment agent server",
		"internal/cli/sneaky.go imports " + mod + "/internal/relay, which depends on " + mod + "/internal/agent (" + mod + "/internal/relay → " + mod + "/internal/agent): forbidden for internal/cli",
		"internal/pure/pure.go imports os/exec: forbidden for internal/pure (runs host programs)",
		"rule for internal/missing: no such package",
		"exception for internal/pure/gone.go importing syscall is not needed any more",
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, w) }) {
			t.Errorf("missing problem %q", w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
}

// listPkg is what `go list -json` says about a package.
type listPkg struct {
	ImportPath string
	Dir        string
	GoFiles    []string // non-test files the build selects
	Imports    []string
	Deps       []string // transitive
	Standard   bool
	Error      *struct{ Err string }
}

// module returns the root directory and path of the module holding dir.
func module(t *testing.T, dir string) (root, path string) {
	t.Helper()
	out := goCmd(t, dir, "list", "-m", "-f", "{{.Dir}}\n{{.Path}}")
	root, path, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	return root, path
}

// load lists the module's packages and everything they depend on, built
// as cove is (CGO_ENABLED=0).
func load(t *testing.T, root string) map[string]*listPkg {
	t.Helper()
	out := goCmd(t, root, "list", "-e", "-deps", "-json=ImportPath,Dir,GoFiles,Imports,Deps,Standard,Error", "./...")
	g := map[string]*listPkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listPkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		g[p.ImportPath] = &p
	}
	return g
}

func goCmd(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	// As cove is built; never the network (the packages are built
	// already, so everything is in the module cache).
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOPROXY=off", "GOTOOLCHAIN=local")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// check applies rules to the package graph g of module mod (rooted at
// root) and returns the problems, one line each.
func check(root, mod string, g map[string]*listPkg, rules []rule, excused []exception) []string {
	var problems []string
	abs := func(p string) string {
		if strings.HasPrefix(p, "internal/") {
			return mod + "/" + p
		}
		return p
	}
	rel := func(file string) string {
		if r, err := filepath.Rel(root, file); err == nil {
			return filepath.ToSlash(r)
		}
		return file
	}
	used := make([]bool, len(excused))
	isExcused := func(file, imp string) bool {
		for i, e := range excused {
			if e.file == file && e.imp == imp {
				used[i] = true
				return true
			}
		}
		return false
	}
	// A banned package of this module that does not exist is a stale rule.
	seen := map[string]bool{}
	for _, r := range rules {
		for _, b := range r.bans {
			if p := abs(b.path); p != b.path && !seen[p] {
				seen[p] = true
				if g[p] == nil {
					problems = append(problems, fmt.Sprintf("ban of %s: no such package (renamed? update the rules)", b.path))
				}
			}
		}
	}
	for _, r := range rules {
		pkg := g[abs(r.pkg)]
		if pkg == nil {
			if !r.optional {
				problems = append(problems, fmt.Sprintf("rule for %s: no such package (renamed? update the rules)", r.pkg))
			}
			continue
		}
		if pkg.Error != nil {
			problems = append(problems, fmt.Sprintf("%s: go list: %s", r.pkg, pkg.Error.Err))
		}
		matches := func(b ban, p string) bool {
			bp := abs(b.path)
			return p == bp || (b.subs && strings.HasPrefix(p, bp+"/"))
		}
		for _, name := range pkg.GoFiles {
			if r.skip != nil && r.skip(name) {
				continue
			}
			path := filepath.Join(pkg.Dir, name)
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", rel(path), err))
				continue
			}
			for _, spec := range f.Imports {
				imp, err := strconv.Unquote(spec.Path.Value)
				if err != nil || imp == "C" {
					continue
				}
				for _, b := range r.bans {
					if matches(b, imp) {
						if !isExcused(rel(path), imp) {
							problems = append(problems, fmt.Sprintf("%s imports %s: forbidden for %s (%s)", rel(path), imp, r.pkg, b.why))
						}
						continue
					}
					if b.direct || g[imp] == nil {
						continue
					}
					for _, d := range g[imp].Deps {
						if matches(b, d) {
							problems = append(problems, fmt.Sprintf("%s imports %s, which depends on %s (%s): forbidden for %s (%s)",
								rel(path), imp, d, strings.Join(chain(g, imp, d), " → "), r.pkg, b.why))
							break
						}
					}
				}
			}
		}
	}
	for i, e := range excused {
		if !used[i] {
			problems = append(problems, fmt.Sprintf("exception for %s importing %s is not needed any more: remove it", e.file, e.imp))
		}
	}
	return problems
}

// chain is a shortest import path from package from to package to.
func chain(g map[string]*listPkg, from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == to {
			var path []string
			for ; p != ""; p = prev[p] {
				path = append(path, p)
			}
			slices.Reverse(path)
			return path
		}
		if g[p] == nil {
			continue
		}
		for _, q := range g[p].Imports {
			if _, ok := prev[q]; !ok {
				prev[q] = p
				queue = append(queue, q)
			}
		}
	}
	return []string{from, "…", to}
}
