package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// node is what a restore must reproduce of one entry: type and
// permission bits (setuid, setgid, sticky included), owner, size, mtime
// (seconds: GNU tar's format keeps no more), content, symlink target, and
// the number of hard links.
type node struct {
	mode       fs.FileMode
	uid, gid   uint32
	size       int64
	mtime      int64
	nlink      uint64
	sum        [32]byte
	linkTarget string
}

// digest describes every entry below dir (dir itself excluded: each tool
// treats the target's root its own way).
func digest(dir string) (map[string]node, error) { return walkTree(dir, true) }

// walkTree describes every entry below dir, with the files' content hashes
// when hash is set.
func walkTree(dir string, hash bool) (map[string]node, error) {
	out := map[string]node{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n := node{mode: info.Mode(), uid: st.Uid, gid: st.Gid}
		switch {
		case info.Mode().IsRegular():
			n.size, n.mtime, n.nlink = st.Size, st.Mtim.Sec, st.Nlink
			if !hash {
				break
			}
			if n.sum, err = hashFile(p); err != nil {
				return err
			}
		case info.Mode()&fs.ModeSymlink != 0:
			if n.linkTarget, err = os.Readlink(p); err != nil {
				return err
			}
		case info.IsDir():
			n.mtime = st.Mtim.Sec
		}
		out[rel] = n
		return nil
	})
	return out, err
}

func hashFile(p string) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(p)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// compare lists how got differs from want, at most limit differences
// (and the count of all).
func compare(want, got map[string]node, limit int) (diffs []string, count int) {
	add := func(format string, args ...any) {
		count++
		if len(diffs) < limit {
			diffs = append(diffs, fmt.Sprintf(format, args...))
		}
	}
	paths := make([]string, 0, len(want))
	for p := range want {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		w := want[p]
		g, ok := got[p]
		switch {
		case !ok:
			add("%s: missing", p)
		case g.mode != w.mode:
			add("%s: mode %v, want %v", p, g.mode, w.mode)
		case g.uid != w.uid || g.gid != w.gid:
			add("%s: owner %d:%d, want %d:%d", p, g.uid, g.gid, w.uid, w.gid)
		case g.size != w.size || g.sum != w.sum:
			add("%s: content differs (%d bytes, want %d)", p, g.size, w.size)
		case g.linkTarget != w.linkTarget:
			add("%s: symlink to %q, want %q", p, g.linkTarget, w.linkTarget)
		case g.mtime != w.mtime:
			add("%s: mtime %d, want %d", p, g.mtime, w.mtime)
		case g.nlink != w.nlink:
			add("%s: %d hard links, want %d", p, g.nlink, w.nlink)
		}
	}
	var extra []string
	for p := range got {
		if _, ok := want[p]; !ok {
			extra = append(extra, p)
		}
	}
	slices.Sort(extra)
	for _, p := range extra {
		add("%s: not in the source", p)
	}
	return diffs, count
}

// treeStats counts a digest's entries.
type treeStats struct {
	files, dirs, symlinks, hardlinked int
	bytes                             int64
}

func stats(d map[string]node) treeStats {
	var s treeStats
	for _, n := range d {
		switch {
		case n.mode.IsRegular():
			s.files++
			s.bytes += n.size
			if n.nlink > 1 {
				s.hardlinked++
			}
		case n.mode.IsDir():
			s.dirs++
		case n.mode&fs.ModeSymlink != 0:
			s.symlinks++
		}
	}
	return s
}

// dirSize is the apparent size of the files below dir.
func dirSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	return total, err
}
