package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
)

const (
	defaultProfilePath = "/etc/profile"
	// defaultProfileMarker is the reference CLI's own marker: an image
	// committed from a container it set up is not patched twice.
	defaultProfileMarker = "/var/devcontainer/.patchEtcProfileMarker"
	// maxProfileSize bounds what is read of /etc/profile: a larger file
	// is left alone.
	maxProfileSize = 1 << 20
)

// profilePathRE is the reference CLI's edit of /etc/profile (sed -E
// 's/((^|\s)PATH=)([^\$]*)$/\1${PATH:-\3}/g'), applied to each line: an
// assignment of a literal PATH becomes a default, so a login shell keeps
// the PATH it was started with (the container's, with what features and
// containerEnv add) instead of resetting it, as Debian's does.
var profilePathRE = regexp.MustCompile(`((^|\s)PATH=)([^\\$]*)$`)

// patchProfile returns b with every literal PATH assignment turned into a
// default. It is idempotent: a patched line contains a '$'.
func patchProfile(b []byte) []byte {
	lines := bytes.SplitAfter(b, []byte("\n"))
	for i, l := range lines {
		body := bytes.TrimSuffix(l, []byte("\n"))
		loc := profilePathRE.FindSubmatchIndex(body)
		if loc == nil {
			continue
		}
		var out []byte
		out = append(out, body[:loc[3]]...) // up to and including "PATH="
		out = append(out, "${PATH:-"...)
		out = append(out, body[loc[6]:loc[7]]...)
		out = append(out, '}')
		out = append(out, body[loc[1]:]...)
		if len(body) < len(l) {
			out = append(out, '\n')
		}
		lines[i] = out
	}
	return bytes.Join(lines, nil)
}

// keepProfilePath patches the container's /etc/profile once (the marker
// file records it, as the reference CLI's does), from inside the
// container: the agent is root in the environment's user namespace and
// sees only the environment's own files. A missing /etc/profile, or one
// that is not a regular file (a symbolic link, a directory) or is
// unreasonably large, is left alone; so is a read-only root. Nothing here
// stops the agent: a failure is logged.
func (a *agent) keepProfilePath() {
	profile, marker := a.cfg.profilePath, a.cfg.profileMarker
	if profile == "" {
		profile = defaultProfilePath
	}
	if marker == "" {
		marker = defaultProfileMarker
	}
	if _, err := os.Lstat(marker); err == nil {
		return // done before (by this agent or the reference CLI)
	}
	if err := os.MkdirAll(filepath.Dir(marker), 0o755); err != nil {
		a.log.Warn("keep PATH in login shells: cannot record the patch; /etc/profile left as is", "err", err)
		return
	}
	f, err := os.OpenFile(marker, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		a.log.Warn("keep PATH in login shells: cannot record the patch; /etc/profile left as is", "err", err)
		return
	}
	f.Close()
	changed, err := patchProfileFile(profile)
	switch {
	case err != nil:
		a.log.Warn("keep PATH in login shells: /etc/profile left as is", "path", profile, "err", err)
	case changed:
		a.log.Info("login shells keep the container's PATH", "patched", profile)
	}
}

// patchProfileFile applies patchProfile to the regular file path,
// replacing it atomically with the same mode and owner. It reports
// whether the file changed; a missing file is not an error.
func patchProfileFile(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if errors.Is(err, syscall.ELOOP) {
		return false, fmt.Errorf("%s is a symbolic link", path)
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if fi.Size() > maxProfileSize {
		return false, fmt.Errorf("%s is larger than %d bytes", path, maxProfileSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxProfileSize+1))
	if err != nil {
		return false, err
	}
	if len(b) > maxProfileSize {
		return false, fmt.Errorf("%s is larger than %d bytes", path, maxProfileSize)
	}
	nb := patchProfile(b)
	if bytes.Equal(nb, b) {
		return false, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".cove-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing is there
	st, _ := fi.Sys().(*syscall.Stat_t)
	err = errors.Join(write(tmp, nb), tmp.Chmod(fi.Mode().Perm()))
	if st != nil && err == nil {
		err = tmp.Chown(int(st.Uid), int(st.Gid))
	}
	err = errors.Join(err, tmp.Sync(), tmp.Close())
	if err != nil {
		return false, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, err
	}
	return true, nil
}

func write(f *os.File, b []byte) error {
	_, err := f.Write(b)
	return err
}
