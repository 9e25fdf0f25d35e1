package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"time"
)

// textGen writes text that compresses like source code: identifiers made
// of common syllables drawn with Zipf frequencies, keywords, indentation
// and comments.
type textGen struct {
	r      *rand.Rand
	vocab  []string
	zipf   *rand.Zipf
	idents int
}

var syllables = []string{"get", "set", "user", "id", "config", "parse", "buf", "len", "err", "ctx", "node", "tree",
	"item", "list", "map", "key", "val", "req", "resp", "handle", "server", "client", "cache", "store", "read",
	"write", "open", "close", "init", "new", "test", "data", "file", "path", "name", "time", "count", "index",
	"state", "event", "queue", "worker", "pool", "conn", "token", "auth", "session", "render", "view", "model"}

var keywords = []string{"func", "return", "if", "for", "var", "const", "type", "struct", "import", "package",
	"nil", "err", "else", "range", "go", "defer", "switch", "case", "string", "int", "bool", "true", "false"}

func newTextGen(r *rand.Rand) *textGen {
	g := &textGen{r: r}
	seen := map[string]bool{}
	for len(g.vocab) < 4000 {
		var sb strings.Builder
		for i := range 1 + r.IntN(3) {
			s := syllables[r.IntN(len(syllables))]
			if i > 0 {
				s = strings.ToUpper(s[:1]) + s[1:]
			}
			sb.WriteString(s)
		}
		if w := sb.String(); !seen[w] {
			seen[w] = true
			g.vocab = append(g.vocab, w)
		}
	}
	g.zipf = rand.NewZipf(r, 1.1, 4, uint64(len(g.vocab)-1))
	return g
}

func (g *textGen) word() string {
	if g.r.IntN(4) == 0 {
		return keywords[g.r.IntN(len(keywords))]
	}
	return g.vocab[g.zipf.Uint64()]
}

// ident is a fresh name (for files and directories): a vocabulary word
// and a counter, so that names do not repeat.
func (g *textGen) ident() string {
	g.idents++
	return fmt.Sprintf("%s%d", g.vocab[g.r.IntN(len(g.vocab))], g.idents)
}

func (g *textGen) words(n int) string {
	w := make([]string, n)
	for i := range w {
		w[i] = g.word()
	}
	return strings.Join(w, " ")
}

// source is about size bytes of code-like lines.
func (g *textGen) source(size int64) []byte {
	var b bytes.Buffer
	depth := 0
	for int64(b.Len()) < size {
		b.WriteString(strings.Repeat("\t", depth))
		switch k := g.r.IntN(10); {
		case k == 0:
			fmt.Fprintf(&b, "// %s\n", g.words(3+g.r.IntN(8)))
		case k == 1 && depth < 4:
			fmt.Fprintf(&b, "if %s != nil {\n", g.word())
			depth++
		case k == 2 && depth < 4:
			fmt.Fprintf(&b, "for _, %s := range %s.%s {\n", g.word(), g.word(), g.word())
			depth++
		case k == 3 && depth > 0:
			b.WriteString("}\n")
			depth--
		case k == 4:
			fmt.Fprintf(&b, "return %s, %d\n", g.word(), g.r.IntN(1000))
		default:
			fmt.Fprintf(&b, "%s := %s(%s, %s)\n", g.word(), g.word(), g.word(), g.word())
		}
	}
	return b.Bytes()[:size]
}

// minified is about size bytes of one-line minified script.
func (g *textGen) minified(size int64) []byte {
	var b bytes.Buffer
	for int64(b.Len()) < size {
		fmt.Fprintf(&b, "function %s(%s,%s){return %s.%s(%d)};", g.word(), g.word(), g.word(), g.word(), g.word(), g.r.IntN(100))
	}
	return b.Bytes()[:size]
}

// gitRunner runs git in a workspace with a fixed identity and fixed
// dates, so that the same tree gives the same objects.
type gitRunner struct{ dir string }

// epoch is the date of the data set's first commit.
var epoch = time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)

func (g gitRunner) run(ctx context.Context, args ...string) error {
	return g.runAt(ctx, epoch, args...)
}

func (g gitRunner) runAt(ctx context.Context, when time.Time, args ...string) error {
	// No automatic gc (it would run detached, racing what follows).
	cmd := exec.CommandContext(ctx, "git", append([]string{"-c", "gc.auto=0", "-c", "maintenance.auto=false"}, args...)...)
	cmd.Dir = g.dir
	date := when.Format(time.RFC3339)
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "HOME="+g.dir,
		"GIT_AUTHOR_NAME=Bench Developer", "GIT_AUTHOR_EMAIL=dev@example.com", "GIT_AUTHOR_DATE="+date,
		"GIT_COMMITTER_NAME=Bench Developer", "GIT_COMMITTER_EMAIL=dev@example.com", "GIT_COMMITTER_DATE="+date)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// commit commits everything (git add -A) as the n-th commit (dated n
// hours after the epoch).
func (g gitRunner) commit(ctx context.Context, msg string, n int) error {
	when := epoch.Add(time.Duration(n) * time.Hour)
	if err := g.runAt(ctx, when, "add", "-A"); err != nil {
		return err
	}
	return g.runAt(ctx, when, "commit", "-q", "--no-verify", "-m", msg)
}
