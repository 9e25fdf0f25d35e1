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
	"strings"
	"syscall"

	"github.com/covedev/cove/internal/guest"
)

const (
	defaultProfilePath = "/etc/profile"
	// defaultProfileMarker is the reference CLI's own marker: an image
	// committed from a container it set up is not patched twice.
	defaultProfileMarker = "/var/devcontainer/.patchEtcProfileMarker"
	defaultEnvFilePath   = "/etc/environment"
	// defaultEnvFileMarker is the reference CLI's marker for its
	// /etc/environment edit.
	defaultEnvFileMarker = "/var/devcontainer/.patchEtcEnvironmentMarker"
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
// file records it, as the reference CLI's does) and appends the
// container's environment to /etc/environment once (its own marker),
// from inside the container: the agent is root in the environment's user
// namespace and sees only the environment's own files. A missing
// /etc/profile, or one that is not a regular file (a symbolic link, a
// directory) or is unreasonably large, is left alone; so is a read-only
// root. Nothing here stops the agent: a failure is logged.
func (a *agent) keepProfilePath() {
	profile, marker := a.cfg.profilePath, a.cfg.profileMarker
	if profile == "" {
		profile = defaultProfilePath
	}
	if marker == "" {
		marker = defaultProfileMarker
	}
	if a.firstTime(marker, profile) {
		changed, err := patchProfileFile(profile)
		switch {
		case err != nil:
			a.log.Warn("keep PATH in login shells: left as is", "path", profile, "err", err)
		case changed:
			a.log.Info("login shells keep the container's PATH", "patched", profile)
		}
	}
	envFile, envMarker := a.cfg.envFilePath, a.cfg.envFileMarker
	if envFile == "" {
		envFile = defaultEnvFilePath
	}
	if envMarker == "" {
		envMarker = defaultEnvFileMarker
	}
	if a.firstTime(envMarker, envFile) {
		if err := appendEnvFile(envFile, a.cfg.Env); err != nil {
			a.log.Warn("keep the container's environment for PAM sessions: left as is", "path", envFile, "err", err)
		}
	}
}

// firstTime creates marker and reports whether it did: false when it
// exists (the edit of file was done before, by this agent or the
// reference CLI) or cannot be created (then file is left alone, and the
// log says why).
func (a *agent) firstTime(marker, file string) bool {
	if _, err := os.Lstat(marker); err == nil {
		return false
	}
	if err := os.MkdirAll(filepath.Dir(marker), 0o755); err != nil {
		a.log.Warn("cannot record an edit: left as is", "path", file, "err", err)
		return false
	}
	f, err := os.OpenFile(marker, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		a.log.Warn("cannot record an edit: left as is", "path", file, "err", err)
		return false
	}
	f.Close()
	return true
}

// appendEnvFile appends env (the container's environment) to the
// pam_env file path as NAME="VALUE" lines, as the reference CLI does, so
// that a session PAM sets up from scratch (su -, sudo -i, a login) starts
// from the container's PATH and variables. HOME (set per user), values
// the file format cannot hold (a newline or a double quote) and the
// environment's own id and name are left out: the file becomes part of
// the features layer, which environments of the same project share.
// The file is created if missing; a symbolic link or anything but a
// regular file is left alone.
func appendEnvFile(path string, env []string) error {
	var b bytes.Buffer
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || k == "HOME" || k == guest.EnvEnvironmentID || k == guest.EnvEnvironmentName ||
			strings.ContainsAny(k, " \t\n\"=#") || strings.ContainsAny(v, "\n\"") {
			continue
		}
		fmt.Fprintf(&b, "\n%s=\"%s\"", k, v)
	}
	if b.Len() == 0 {
		return nil
	}
	b.WriteByte('\n')
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o644)
	if errors.Is(err, syscall.ELOOP) {
		return fmt.Errorf("%s is a symbolic link", path)
	}
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if err == nil {
		_, err = f.Write(b.Bytes())
	}
	return errors.Join(err, f.Close())
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
