package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/covedev/cove/bench/internal/benchkit"
)

// datasetVersion changes whenever the generator would produce different
// data for the same parameters: a cached data set with another stamp is
// rebuilt.
const datasetVersion = 1

// dataset describes the workspace every tool backs up: a source tree of
// small text files under git (with a history made by git itself), a
// node_modules-like tree of small generated files (ignored by git), and a
// few large build outputs of mixed compressibility (ignored by git).
type dataset struct {
	seed int64
	size int64 // target total, bytes
}

func (d dataset) stamp() string {
	return fmt.Sprintf("cove-bench-backup dataset v%d seed=%d size=%d\n", datasetVersion, d.seed, d.size)
}

// ensure returns the directory holding the generated workspace under
// cache, generating it when it is missing or its stamp differs.
func (d dataset) ensure(ctx context.Context, cache string) (string, error) {
	tree := filepath.Join(cache, "tree")
	stampFile := filepath.Join(cache, "stamp")
	if b, err := os.ReadFile(stampFile); err == nil && string(b) == d.stamp() {
		if _, err := os.Stat(tree); err == nil {
			return tree, nil
		}
	}
	benchkit.Progress("generating the data set (%d MiB, seed %d) into %s: once, later runs reuse it", d.size>>20, d.seed, cache)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	os.Remove(stampFile)
	tmp := tree + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := d.generate(ctx, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("generate data set: %w", err)
	}
	if err := os.RemoveAll(tree); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, tree); err != nil {
		return "", err
	}
	if err := os.WriteFile(stampFile, []byte(d.stamp()), 0o644); err != nil {
		return "", err
	}
	return tree, nil
}

// Shares of the target size: source files (under git), node_modules,
// binaries; git's history (a pack of the source) comes on top, about a
// quarter of the source's size.
const (
	shareSource  = 0.25
	shareModules = 0.10
	shareBinary  = 0.55
)

// binaryShares split the binaries' share into four files (84 to 197 MiB
// for 1 GiB).
var binaryShares = []float64{0.15, 0.20, 0.30, 0.35}

func (d dataset) generate(ctx context.Context, dir string) error {
	r := rand.New(rand.NewPCG(uint64(d.seed), 1))
	g := newTextGen(r)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("/node_modules/\n/build/\n"), 0o644); err != nil {
		return err
	}
	// The source tree, committed in a first commit.
	srcDirs := makeDirs(r, g, []string{"cmd", "internal", "pkg", "web/src", "docs", "scripts", "test", "third_party"}, 6)
	srcFiles, err := writeTextFiles(r, g, dir, srcDirs, int64(float64(d.size)*shareSource), false)
	if err != nil {
		return err
	}
	git := gitRunner{dir: dir}
	if err := git.run(ctx, "init", "-q", "-b", "main"); err != nil {
		return err
	}
	if err := git.commit(ctx, "initial import", 0); err != nil {
		return err
	}
	// A history: 20 commits each editing about 0.5% of the source files.
	for c := 1; c <= 20; c++ {
		for range max(1, len(srcFiles)/200) {
			if err := editTextFile(r, g, srcFiles[r.IntN(len(srcFiles))]); err != nil {
				return err
			}
		}
		if err := git.commit(ctx, fmt.Sprintf("change %d: %s", c, g.words(6)), c); err != nil {
			return err
		}
	}
	if err := git.run(ctx, "gc", "-q"); err != nil {
		return err
	}
	// node_modules: many small files, a few symlinks and hard links.
	modDirs := makeDirs(r, g, []string{"node_modules"}, 4)
	modFiles, err := writeTextFiles(r, g, dir, modDirs, int64(float64(d.size)*shareModules), true)
	if err != nil {
		return err
	}
	bin := filepath.Join(dir, "node_modules", ".bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	for i := range min(50, len(modFiles)) {
		rel, _ := filepath.Rel(bin, modFiles[i])
		if err := os.Symlink(rel, filepath.Join(bin, fmt.Sprintf("tool-%d", i))); err != nil {
			return err
		}
	}
	store := filepath.Join(dir, "node_modules", ".store")
	if err := os.MkdirAll(store, 0o755); err != nil {
		return err
	}
	for i := range min(20, len(modFiles)) {
		if err := os.Link(modFiles[len(modFiles)-1-i], filepath.Join(store, fmt.Sprintf("linked-%d.js", i))); err != nil {
			return err
		}
	}
	// Build outputs.
	if err := os.MkdirAll(filepath.Join(dir, "build"), 0o755); err != nil {
		return err
	}
	for i, share := range binaryShares {
		size := int64(float64(d.size) * shareBinary * share)
		p := filepath.Join(dir, "build", fmt.Sprintf("%s-%d", g.ident(), i))
		if err := writeBinary(r, g, p, size); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// makeDirs makes a random tree of directory paths (relative) below the
// given roots, about one directory per 15 files, depth up to maxDepth.
func makeDirs(r *rand.Rand, g *textGen, roots []string, maxDepth int) []string {
	dirs := slices.Clone(roots)
	seen := map[string]bool{}
	for _, d := range roots {
		seen[d] = true
	}
	for range 60 * len(roots) {
		parent := dirs[r.IntN(len(dirs))]
		if strings.Count(parent, "/") >= maxDepth {
			continue
		}
		d := parent + "/" + strings.ToLower(g.ident())
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	return dirs
}

var sourceExts = []string{".go", ".go", ".go", ".ts", ".tsx", ".c", ".h", ".md", ".json", ".yaml", ".sh"}

// writeTextFiles writes text files into dirs until budget bytes are
// written and returns their paths (in creation order). Sizes are
// log-normal (median 4 KiB, a long tail to 400 KiB, about 1% empty).
func writeTextFiles(r *rand.Rand, g *textGen, root string, dirs []string, budget int64, minified bool) ([]string, error) {
	var files []string
	seen := map[string]bool{}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, err
		}
	}
	for written := int64(0); written < budget; {
		size := int64(math.Exp(r.NormFloat64()*1.2 + math.Log(4096)))
		size = min(size, 400<<10)
		if r.IntN(100) == 0 {
			size = 0
		}
		ext := sourceExts[r.IntN(len(sourceExts))]
		if minified {
			ext = ".js"
		}
		rel := dirs[r.IntN(len(dirs))] + "/" + strings.ToLower(g.ident()) + ext
		if seen[rel] {
			continue
		}
		seen[rel] = true
		var content []byte
		if minified {
			content = g.minified(size)
		} else {
			content = g.source(size)
		}
		mode := os.FileMode(0o644)
		switch {
		case ext == ".sh":
			mode = 0o755
		case r.IntN(50) == 0:
			mode = 0o600
		}
		p := filepath.Join(root, rel)
		if err := os.WriteFile(p, content, mode); err != nil {
			return nil, err
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			return nil, err
		}
		files = append(files, p)
		written += int64(len(content))
	}
	return files, nil
}

// editTextFile inserts a few generated lines at a random line of p, as an
// edit in an editor would (the file is rewritten).
func editTextFile(r *rand.Rand, g *textGen, p string) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	at := 0
	if len(b) > 0 {
		at = r.IntN(len(b))
		if i := strings.IndexByte(string(b[at:]), '\n'); i >= 0 {
			at += i + 1
		} else {
			at = len(b)
		}
	}
	out := slices.Concat(b[:at], g.source(int64(80+r.IntN(400))), b[at:])
	return os.WriteFile(p, out, 0)
}

// writeBinary writes size bytes looking like a build output: 64 KiB
// blocks of machine-code-like bytes (skewed byte frequencies, ~5 bits of
// entropy per byte), incompressible data (embedded compressed assets),
// string tables (text) and zero padding.
func writeBinary(r *rand.Rand, g *textGen, p string, size int64) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Chmod(0o755); err != nil {
		return err
	}
	const block = 64 << 10
	buf := make([]byte, block)
	for left := size; left > 0; left -= block {
		b := buf[:min(block, left)]
		fillBinaryBlock(r, g, b)
		if _, err := f.Write(b); err != nil {
			return err
		}
	}
	return f.Close()
}

// skewed maps a uniform byte to a byte of machine-code-like frequency:
// a few values (0x00, 0xff, common opcodes) most of the time.
var skewed = func() [256]byte {
	var t [256]byte
	common := []byte{0x00, 0x00, 0x00, 0x00, 0x48, 0x48, 0x89, 0x89, 0x8b, 0xff, 0xe8, 0x0f, 0x85, 0x84, 0x24, 0xc3, 0x41, 0x4c, 0x83, 0x74, 0x75, 0xeb, 0x01, 0x10}
	for i := range t {
		if i < 128 {
			t[i] = common[i%len(common)]
		} else {
			t[i] = byte(i * 7)
		}
	}
	return t
}()

func fillBinaryBlock(r *rand.Rand, g *textGen, b []byte) {
	switch k := r.IntN(100); {
	case k < 45: // code
		fillCode(r, b)
	case k < 75: // compressed assets
		chacha(r).Read(b)
	case k < 90: // string tables
		copy(b, g.source(int64(len(b))))
	default: // padding
		clear(b)
	}
}

// fillCode fills b with machine-code-like bytes.
func fillCode(r *rand.Rand, b []byte) {
	chacha(r).Read(b)
	for i := range b {
		b[i] = skewed[b[i]]
	}
}

// chacha is a fast generator of random bytes seeded from r.
func chacha(r *rand.Rand) *rand.ChaCha8 {
	var seed [32]byte
	for i := range 4 {
		v := r.Uint64()
		for j := range 8 {
			seed[i*8+j] = byte(v >> (8 * j))
		}
	}
	return rand.NewChaCha8(seed)
}
