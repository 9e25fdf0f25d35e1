package confine

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"time"

	"golang.org/x/sys/unix"
)

// FS returns d as an fs.FS whose names resolve below d with how (InRoot
// for an image's root file system: links are followed but never lead out).
// A FIFO, socket or device is never opened for reading: its fs.File only
// answers Stat (with its real type, so a reader can refuse it by name) and
// fails every Read. Errors name the fs.FS path, not the host path d was
// opened by. d must stay open while the FS is used.
func (d *Dir) FS(how Resolve) fs.FS { return dirFS{d: d, how: how} }

type dirFS struct {
	d   *Dir
	how Resolve
}

func (f dirFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	file, err := f.d.Open(name, f.how)
	if errors.Is(err, ErrNotRegular) {
		return f.irregular(name)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: cause(err)}
	}
	return file, nil
}

// irregular describes name (already refused by Open) without opening it
// for reading.
func (f dirFS) irregular(name string) (fs.File, error) {
	p, err := f.d.OpenPath(name, f.how)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: cause(err)}
	}
	defer p.Close()
	var st unix.Stat_t
	if err := unix.Fstat(p.Fd(), &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	mode := fs.FileMode(st.Mode & 0o777)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	default:
		mode |= fs.ModeIrregular
	}
	return statOnly{name: path.Base(name), mode: mode}, nil
}

// cause strips the host path from a confine error.
func cause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// statOnly is an entry that is not read: Stat only.
type statOnly struct {
	name string
	mode fs.FileMode
}

func (s statOnly) Stat() (fs.FileInfo, error) { return s, nil }
func (s statOnly) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: s.name, Err: ErrNotRegular}
}
func (s statOnly) Close() error       { return nil }
func (s statOnly) Name() string       { return s.name }
func (s statOnly) Size() int64        { return 0 }
func (s statOnly) Mode() fs.FileMode  { return s.mode }
func (s statOnly) ModTime() time.Time { return time.Time{} }
func (s statOnly) IsDir() bool        { return false }
func (s statOnly) Sys() any           { return nil }
