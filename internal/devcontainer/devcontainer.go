// Package devcontainer finds, reads, checks and merges a repository's
// devcontainer.json (https://containers.dev/implementors/json_reference/)
// with the semantics of the reference CLI (devcontainers/cli): discovery,
// JSON with comments, legacy properties, variables (see vars.go for what
// "local" means on a runner), image metadata merging, and a policy check
// that refuses, in one message, everything cove cannot honour.
//
// The runner calls Load, then MergeImageMetadata with the pulled image's
// devcontainer.metadata label, Merged.Check, ChooseClass, and later
// Merged.ResolveContainerEnv once the container's environment is known.
package devcontainer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"

	"github.com/tailscale/hujson"

	"github.com/covedev/cove/internal/usererr"
)

// maxSize bounds the size of a devcontainer.json we are willing to read.
const maxSize = 1 << 20

// Find returns the path of the devcontainer.json to use in repoDir.
//
// With explicitPath (relative to repoDir) that file must exist and stay inside
// the repository. Otherwise the standard locations are tried in order:
// .devcontainer/devcontainer.json, .devcontainer.json, then the first (by
// name) .devcontainer/<folder>/devcontainer.json. It returns "" and a nil
// error when the repository has none.
func Find(repoDir, explicitPath string) (string, error) {
	if explicitPath != "" {
		rel := filepath.Clean(filepath.FromSlash(explicitPath))
		if !filepath.IsLocal(rel) {
			return "", usererr.New("devcontainer path %q must be relative and inside the repository", explicitPath)
		}
		p := filepath.Join(repoDir, rel)
		if err := checkRegularInside(repoDir, p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", usererr.Wrap(err, "devcontainer file %q not found in the repository", explicitPath)
			}
			return "", usererr.Wrap(err, "devcontainer file %q: %v", explicitPath, err)
		}
		return p, nil
	}
	candidates := []string{
		filepath.Join(repoDir, ".devcontainer", "devcontainer.json"),
		filepath.Join(repoDir, ".devcontainer.json"),
	}
	entries, err := os.ReadDir(filepath.Join(repoDir, ".devcontainer"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return "", fmt.Errorf("read .devcontainer: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			candidates = append(candidates, filepath.Join(repoDir, ".devcontainer", e.Name(), "devcontainer.json"))
		}
	}
	for _, p := range candidates {
		err := checkRegularInside(repoDir, p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return "", usererr.Wrap(err, "devcontainer file %s: %v", relTo(repoDir, p), err)
		}
	}
	return "", nil
}

// checkRegularInside checks that p is a regular file whose real location is
// inside repoDir: a repository must not be able to make us read host files
// through a symlink.
func checkRegularInside(repoDir, p string) error {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return err
	}
	root, err := filepath.EvalSymlinks(repoDir)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(root, real)
	if err != nil || !filepath.IsLocal(rel) {
		return errors.New("points outside the repository")
	}
	fi, err := os.Stat(real)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	return nil
}

func relTo(base, p string) string {
	if r, err := filepath.Rel(base, p); err == nil {
		return r
	}
	return p
}

// Parse reads the devcontainer.json at path. It accepts JSON with comments
// and trailing commas; syntax errors are user-visible as
// "FILE:LINE:COL: message".
func Parse(path string) (*Config, error) { return parseFile(path, path) }

// parseFile is Parse, naming the file name in messages.
func parseFile(path, name string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usererr.Wrap(err, "read devcontainer file: %v", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxSize+1)); err != nil {
		return nil, usererr.Wrap(err, "read devcontainer file: %v", err)
	}
	if buf.Len() > maxSize {
		return nil, usererr.New("%s: file is larger than %d bytes", name, maxSize)
	}
	return parseBytes(name, buf.Bytes())
}

var hujsonPos = regexp.MustCompile(`^hujson: line (\d+), column (\d+): (.*)$`)

// parseBytes parses a devcontainer.json document into a Config without
// folding legacy properties or substituting variables (Read does both).
func parseBytes(name string, data []byte) (*Config, error) {
	v, err := hujson.Parse(data)
	if err != nil {
		if m := hujsonPos.FindStringSubmatch(err.Error()); m != nil {
			return nil, usererr.Wrap(err, "%s:%s:%s: %s", name, m[1], m[2], m[3])
		}
		return nil, usererr.Wrap(err, "%s: %v", name, err)
	}
	src := &source{name: name, pos: map[string]int{}, order: map[string][]string{}}
	// Standardize replaces comments and trailing commas by spaces, so byte
	// offsets in std are those of the original file.
	v.Standardize()
	std := v.Pack()
	src.data = std
	src.walk("", &v)
	var raw any
	if err := json.Unmarshal(std, &raw); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := lineColumn(std, int(se.Offset))
			return nil, usererr.Wrap(err, "%s:%d:%d: %v", name, line, col, err)
		}
		return nil, usererr.Wrap(err, "%s: %v", name, err)
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, usererr.New("%s:1:1: top-level value must be an object", name)
	}
	c := &Config{Path: name, Raw: obj, src: src}
	if err := c.decode(); err != nil {
		return nil, err
	}
	return c, nil
}

func lineColumn(b []byte, n int) (line, col int) {
	if n > len(b) {
		n = len(b)
	}
	if n < 0 {
		n = 0
	}
	line = 1 + bytes.Count(b[:n], []byte("\n"))
	col = 1 + n - (bytes.LastIndexByte(b[:n], '\n') + 1)
	return line, col
}

func jsonType(v any) string {
	switch v.(type) {
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return strconv.Quote(fmt.Sprintf("%T", v))
}
