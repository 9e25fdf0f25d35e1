// Package mountinfo reads this process's mount table
// (/proc/self/mountinfo): what is mounted where, seen by the kernel, bind
// and idmapped mounts of one file system included (comparing devices
// misses those). IsMountPoint is cove's one "is this a mount point" test.
package mountinfo

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mount is one line of mountinfo.
type Mount struct {
	Device string // major:minor
	Root   string // the path inside its file system that is mounted
	Point  string // where it is mounted
	FSType string
}

// Read returns the mounts of this process's mount namespace.
func Read() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, _ := strings.Cut(sc.Text(), " - ")
		fields, after := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 {
			continue
		}
		m := Mount{Device: fields[2], Root: Unescape(fields[3]), Point: Unescape(fields[4])}
		if len(after) > 0 {
			m.FSType = after[0]
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

// Points returns the set of mount points.
func Points() (map[string]bool, error) {
	ms, err := Read()
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(ms))
	for _, m := range ms {
		out[m.Point] = true
	}
	return out, nil
}

// Under lists the mount points at or below dir, without walking dir
// (whose tree an environment may have made deeper than any path).
func Under(dir string) ([]string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	mps, err := Points()
	if err != nil {
		return nil, err
	}
	var out []string
	for p := range mps {
		if p == abs || strings.HasPrefix(p, abs+"/") {
			out = append(out, p)
		}
	}
	return out, nil
}

// Unescape undoes mountinfo's octal escapes (\040 for a space).
func Unescape(s string) string {
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
