package main

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// changeSummary says what change did.
type changeSummary struct {
	Modified, Added, Deleted int
	Binary                   string // the build output with a rewritten region
	BinaryBytes              int64
}

func (c changeSummary) String() string {
	return fmt.Sprintf("%d files modified, %d added, %d deleted, %d MiB rewritten in the middle of %s, one git commit",
		c.Modified, c.Added, c.Deleted, c.BinaryBytes>>20, c.Binary)
}

// change applies the same "about 1% of the files" change to a copy of the
// data set, as a developer's few minutes of work would: edits to source
// files and to files under node_modules, new files, deleted files, a
// rebuilt binary of which a region changed, and a git commit of it all.
// It is deterministic: the same seed on the same tree makes the same
// change (git's commit included: fixed identity and dates).
func change(ctx context.Context, dir string, seed int64) (changeSummary, error) {
	var sum changeSummary
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() && (rel == ".git" || rel == "build") {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return sum, err
	}
	if len(files) == 0 {
		return sum, fmt.Errorf("no files to change in %s", dir)
	}
	r := rand.New(rand.NewPCG(uint64(seed), 2))
	g := newTextGen(r)
	n := max(10, len(files)/100)
	// Choose n distinct files: 80% are edited, 10% deleted, and as many
	// new files as deleted ones appear next to other chosen files.
	perm := r.Perm(len(files))[:n]
	for i, fi := range perm {
		p := files[fi]
		switch {
		case i < n*8/10:
			if err := editTextFile(r, g, p); err != nil {
				return sum, err
			}
			sum.Modified++
		case i < n*9/10:
			if err := os.Remove(p); err != nil {
				return sum, err
			}
			sum.Deleted++
		default:
			name := filepath.Join(filepath.Dir(p), strings.ToLower(g.ident())+"-new"+filepath.Ext(p))
			if err := os.WriteFile(name, g.source(int64(200+r.IntN(20000))), 0o644); err != nil {
				return sum, err
			}
			sum.Added++
		}
	}
	// A rebuilt binary: a region in the middle of the smallest one.
	bins, err := filepath.Glob(filepath.Join(dir, "build", "*"))
	if err != nil || len(bins) == 0 {
		return sum, fmt.Errorf("no build outputs in %s", dir)
	}
	slices.SortFunc(bins, func(a, b string) int { return int(fileSize(a) - fileSize(b)) })
	sum.Binary, _ = filepath.Rel(dir, bins[0])
	sum.BinaryBytes = min(1<<20, fileSize(bins[0])/2)
	f, err := os.OpenFile(bins[0], os.O_WRONLY, 0)
	if err != nil {
		return sum, err
	}
	patch := make([]byte, sum.BinaryBytes)
	fillCode(r, patch)
	_, err = f.WriteAt(patch, fileSize(bins[0])/2)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return sum, err
	}
	return sum, gitRunner{dir: dir}.commit(ctx, "work of the day: "+g.words(5), 21)
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}
