package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The restore check is what makes the figures worth anything: every kind
// of difference a restore could get wrong must be reported.
func TestCompareFindsEveryDifference(t *testing.T) {
	mk := func(t *testing.T) string {
		d := t.TempDir()
		must(t, os.MkdirAll(filepath.Join(d, "a/b"), 0o755))
		must(t, os.WriteFile(filepath.Join(d, "a/b/f"), []byte("hello"), 0o644))
		must(t, os.WriteFile(filepath.Join(d, "a/x"), []byte("x"), 0o755))
		must(t, os.Link(filepath.Join(d, "a/x"), filepath.Join(d, "a/y")))
		must(t, os.Symlink("b/f", filepath.Join(d, "a/l")))
		mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		for _, p := range []string{"a/b/f", "a/x", "a/b", "a"} {
			must(t, os.Chtimes(filepath.Join(d, p), mt, mt))
		}
		return d
	}
	want := digestOf(t, mk(t))
	if diffs, n := compare(want, digestOf(t, mk(t)), 10); n != 0 {
		t.Fatalf("identical trees differ: %v", diffs)
	}
	for name, mutate := range map[string]func(d string) error{
		"content, same size": func(d string) error { return os.WriteFile(filepath.Join(d, "a/b/f"), []byte("jello"), 0) },
		"mode":               func(d string) error { return os.Chmod(filepath.Join(d, "a/x"), os.ModeSetuid|0o755) },
		"mtime": func(d string) error {
			return os.Chtimes(filepath.Join(d, "a/b/f"), time.Unix(1, 0), time.Unix(1, 0))
		},
		"dir mtime": func(d string) error { return os.Chtimes(filepath.Join(d, "a/b"), time.Unix(1, 0), time.Unix(1, 0)) },
		"symlink target": func(d string) error {
			os.Remove(filepath.Join(d, "a/l"))
			return os.Symlink("b/g", filepath.Join(d, "a/l"))
		},
		"missing file": func(d string) error { return os.Remove(filepath.Join(d, "a/b/f")) },
		"extra file":   func(d string) error { return os.WriteFile(filepath.Join(d, "a/extra"), nil, 0o644) },
		"hard link made a copy": func(d string) error {
			os.Remove(filepath.Join(d, "a/y"))
			if err := os.WriteFile(filepath.Join(d, "a/y"), []byte("x"), 0o755); err != nil {
				return err
			}
			return os.Chmod(filepath.Join(d, "a/y"), 0o755)
		},
		"owner": func(d string) error {
			if os.Geteuid() != 0 {
				return errSkip
			}
			return os.Lchown(filepath.Join(d, "a/x"), 1000, 1000)
		},
	} {
		t.Run(name, func(t *testing.T) {
			d := mk(t)
			if err := mutate(d); err == errSkip {
				t.Skip("changing an owner needs root")
			} else if err != nil {
				t.Fatal(err)
			}
			if diffs, n := compare(want, digestOf(t, d), 10); n == 0 {
				t.Errorf("a restore with a different %s passes the check", name)
			} else {
				t.Logf("%d: %v", n, diffs)
			}
		})
	}
}

var errSkip = os.ErrPermission

// The data set and the change are the same for every run with a seed:
// figures from two runs (or two machines) describe the same data.
func TestDatasetAndChangeAreDeterministic(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git: " + err.Error())
	}
	ctx := context.Background()
	gen := func(seed int64) map[string]node {
		d := filepath.Join(t.TempDir(), "ws")
		must(t, dataset{seed: seed, size: 2 << 20}.generate(ctx, d))
		if _, err := change(ctx, d, seed+1000); err != nil {
			t.Fatal(err)
		}
		return contentOnly(digestOf(t, d))
	}
	a, b, other := gen(1), gen(1), gen(2)
	st := stats(a)
	if st.files < 100 || st.dirs < 10 || st.symlinks == 0 || st.hardlinked == 0 {
		t.Fatalf("the data set lacks variety: %+v", st)
	}
	if _, ok := a[".git/HEAD"]; !ok {
		t.Fatal("the data set has no git repository")
	}
	if diffs, n := compare(a, b, 10); n != 0 {
		t.Errorf("same seed, %d differences: %v", n, diffs)
	}
	if _, n := compare(a, other, 10); n == 0 {
		t.Error("another seed made the same data set")
	}
}

// contentOnly drops what differs between two generations of the same
// data: times (files are written now) and git's index (it caches inodes
// and times).
func contentOnly(d map[string]node) map[string]node {
	for p, n := range d {
		if p == ".git/index" {
			delete(d, p)
			continue
		}
		n.mtime = 0
		d[p] = n
	}
	return d
}

func TestMountOf(t *testing.T) {
	info := strings.Join([]string{
		"22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
		"30 22 0:26 / /var/tmp rw shared:2 - tmpfs tmpfs rw",
		"31 22 0:27 / /var/tmpx rw shared:3 - xfs /dev/vdb rw",
		"garbage",
	}, "\n")
	for p, want := range map[string]string{
		"/var/tmp/x":  "tmpfs tmpfs (mounted on /var/tmp)",
		"/var/tmp":    "tmpfs tmpfs (mounted on /var/tmp)",
		"/var/tmpx/a": "xfs /dev/vdb (mounted on /var/tmpx)",
		"/var/cache":  "ext4 /dev/vda (mounted on /)",
	} {
		if got := mountOf(info, p); got != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
}

func TestVersionIn(t *testing.T) {
	for in, want := range map[string]string{
		"tar (GNU tar) 1.34\nCopyright":                           "1.34",
		"*** Zstandard CLI (64-bit) v1.5.4, by Yann Collet ***\n": "1.5.4",
		"restic 0.14.0 compiled with go1.19.8 on linux/amd64\n":   "0.14.0",
		"no version here": "(unknown version)",
	} {
		if got := versionIn(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func digestOf(t *testing.T, dir string) map[string]node {
	t.Helper()
	d, err := digest(dir)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
