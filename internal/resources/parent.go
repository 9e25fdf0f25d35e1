package resources

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// RemoveParent removes the cgroup parent (the directory every
// environment's cgroup is made under, like "cove") from every mounted
// cgroup hierarchy: each v1 controller's hierarchy, named hierarchies such
// as name=systemd, and the v2 (or hybrid unified) one. It removes nothing
// while the parent has a child cgroup or a process in any hierarchy, and
// reports whether the parent is gone. Only the parent's own directory is
// removed, never its ancestors ("a" of "a/b"), which may be someone else's.
func RemoveParent(parent string) (removed bool, err error) {
	p := path.Clean("/" + parent)
	if p == "/" || slices.Contains(strings.Split(parent, "/"), "..") {
		return false, fmt.Errorf("remove cgroup parent %q: not a cgroup below the root", parent)
	}
	mounts, err := hierarchyMounts()
	if err != nil {
		return false, fmt.Errorf("remove cgroup parent %s: %w", parent, err)
	}
	var dirs []string
	for _, m := range mounts {
		d := filepath.Join(m, p)
		used, err := dirInUse(d)
		if err != nil {
			return false, fmt.Errorf("remove cgroup parent %s: %w", parent, err)
		}
		if used {
			return false, nil
		}
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		// The kernel refuses (EBUSY) a cgroup that gained a child or a
		// process meanwhile.
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
			if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.ENOTEMPTY) {
				return false, nil
			}
			return false, fmt.Errorf("remove cgroup parent %s: %w", d, err)
		}
	}
	return true, nil
}

// hierarchyMounts lists the mount points of the cgroup hierarchies (v1 and
// v2) in this mount namespace, one per hierarchy.
func hierarchyMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	seen := map[string]bool{}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, after := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(after) < 1 || (after[0] != "cgroup" && after[0] != "cgroup2") {
			continue
		}
		// Cgroup paths are below a mount of the hierarchy's root; the
		// same hierarchy mounted again (a bind mount) is the same device.
		if fields[3] != "/" || seen[fields[2]] {
			continue
		}
		seen[fields[2]] = true
		out = append(out, unescapeMountinfo(fields[4]))
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
