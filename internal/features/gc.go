package features

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// MarkUsed records that the cached feature directories of fs were just
// used, so that StaleCache counts their age from now. A symlink is not
// followed.
func MarkUsed(fs []Feature) {
	ts := unix.NsecToTimespec(time.Now().UnixNano())
	for _, f := range fs {
		_ = unix.UtimesNanoAt(unix.AT_FDCWD, f.Dir, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	}
}

// StaleCache lists what in the feature cache at cacheDir was last used or
// changed before cutoff: unpacked features (sha256/<hex>, see MarkUsed) and
// anything under tmp/ (downloads and unpacks a crashed process left). The
// cache holds nothing an environment needs once its features are staged,
// so the caller may remove all of it, as long as no Resolve or Stage runs
// meanwhile.
func StaleCache(cacheDir string, cutoff time.Time) ([]string, error) {
	var out []string
	for _, sub := range []string{"sha256", "tmp"} {
		dir := filepath.Join(cacheDir, sub)
		ents, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("feature cache: %w", err)
		}
		for _, e := range ents {
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("feature cache: %w", err)
			}
			if fi.ModTime().Before(cutoff) {
				out = append(out, filepath.Join(dir, e.Name()))
			}
		}
	}
	return out, nil
}
