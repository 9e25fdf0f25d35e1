package passwd

import (
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/covedev/cove/internal/usererr"
)

const passwdFile = `# comment
root:x:0:0:root:/root:/bin/bash
dev:x:1000:1000:Dev User,,,:/home/dev:/usr/bin/zsh
noshell:x:1001:1001::/home/noshell:
nohome:x:1002:1002
broken line
bad:x:notanumber:1::/:/bin/sh
+nisuser::::::
  indented:x:1003:1003::/home/indented:/bin/sh
dup:x:1004:1004::/first:/bin/sh
dup:x:1005:1005::/second:/bin/sh
4242:x:7:7::/home/named-by-digits:/bin/sh
crlf:x:1006:1006::/home/crlf:/bin/sh` + "\r\n" + `nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`

const groupFile = `root:x:0:
dev:x:1000:
docker:x:999:dev,other
wheel:x:10:root, dev
dupgroup:x:20:dev
dupgroup:x:21:
nogroup:x:65534:
badgroup:x:oops:dev
+nis
`

func accounts() fstest.MapFS {
	return fstest.MapFS{
		"etc/passwd": {Data: []byte(passwdFile)},
		"etc/group":  {Data: []byte(groupFile)},
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		spec string
		want User
	}{
		// "" is uid 0: passwd's root, with the groups listing root.
		{"", User{Name: "root", UID: 0, GID: 0, Groups: []uint32{0, 10}, Home: "/root", Shell: "/bin/bash"}},
		{"root", User{Name: "root", UID: 0, GID: 0, Groups: []uint32{0, 10}, Home: "/root", Shell: "/bin/bash"}},
		{"0", User{Name: "root", UID: 0, GID: 0, Groups: []uint32{0, 10}, Home: "/root", Shell: "/bin/bash"}},
		// By name and by uid: passwd's primary group, then every group
		// that lists the name (first occurrence of a gid only).
		{"dev", User{Name: "dev", UID: 1000, GID: 1000, Groups: []uint32{1000, 999, 10, 20}, Home: "/home/dev", Shell: "/usr/bin/zsh"}},
		{"1000", User{Name: "dev", UID: 1000, GID: 1000, Groups: []uint32{1000, 999, 10, 20}, Home: "/home/dev", Shell: "/usr/bin/zsh"}},
		// "user:" is "user" (runc).
		{"dev:", User{Name: "dev", UID: 1000, GID: 1000, Groups: []uint32{1000, 999, 10, 20}, Home: "/home/dev", Shell: "/usr/bin/zsh"}},
		// An explicit group, by name or number, replaces the primary
		// group and drops the supplementary ones (Docker, runc).
		{"dev:docker", User{Name: "dev", UID: 1000, GID: 999, Groups: []uint32{999}, Home: "/home/dev", Shell: "/usr/bin/zsh"}},
		{"dev:999", User{Name: "dev", UID: 1000, GID: 999, Groups: []uint32{999}, Home: "/home/dev", Shell: "/usr/bin/zsh"}},
		{"1000:4242", User{Name: "dev", UID: 1000, GID: 4242, Groups: []uint32{4242}, Home: "/home/dev", Shell: "/usr/bin/zsh"}},
		{"dev:dupgroup", User{Name: "dev", UID: 1000, GID: 20, Groups: []uint32{20}, Home: "/home/dev", Shell: "/usr/bin/zsh"}},
		// A numeric uid passwd does not list: gid 0, home "/".
		{"5000", User{Name: "5000", UID: 5000, GID: 0, Groups: []uint32{0}, Home: "/"}},
		{"5000:65534", User{Name: "5000", UID: 5000, GID: 65534, Groups: []uint32{65534}, Home: "/"}},
		{"5000:nogroup", User{Name: "5000", UID: 5000, GID: 65534, Groups: []uint32{65534}, Home: "/"}},
		{"2147483647", User{Name: "2147483647", UID: 2147483647, GID: 0, Groups: []uint32{0}, Home: "/"}},
		// A numeric spec is always a uid, never the name of a user.
		{"4242", User{Name: "4242", UID: 4242, GID: 0, Groups: []uint32{0}, Home: "/"}},
		{"7", User{Name: "4242", UID: 7, GID: 7, Groups: []uint32{7}, Home: "/home/named-by-digits", Shell: "/bin/sh"}},
		// Fields passwd leaves empty or out.
		{"noshell", User{Name: "noshell", UID: 1001, GID: 1001, Groups: []uint32{1001}, Home: "/home/noshell"}},
		{"nohome", User{Name: "nohome", UID: 1002, GID: 1002, Groups: []uint32{1002}, Home: "/"}},
		// Leading blanks and CRLF line ends; the first of two lines wins.
		{"indented", User{Name: "indented", UID: 1003, GID: 1003, Groups: []uint32{1003}, Home: "/home/indented", Shell: "/bin/sh"}},
		{"crlf", User{Name: "crlf", UID: 1006, GID: 1006, Groups: []uint32{1006}, Home: "/home/crlf", Shell: "/bin/sh"}},
		{"dup", User{Name: "dup", UID: 1004, GID: 1004, Groups: []uint32{1004}, Home: "/first", Shell: "/bin/sh"}},
	}
	fsys := accounts()
	for _, tt := range tests {
		got, err := Lookup(fsys, tt.spec)
		if err != nil {
			t.Errorf("Lookup(%q): %v", tt.spec, err)
			continue
		}
		if !equal(got, tt.want) {
			t.Errorf("Lookup(%q) = %+v, want %+v", tt.spec, got, tt.want)
		}
	}
}

func TestLookupRefuses(t *testing.T) {
	for _, tt := range []struct {
		spec, msg string
	}{
		{"nosuchuser", `user "nosuchuser" not found in /etc/passwd`},
		{"bad", `user "bad" not found in /etc/passwd`},           // its uid is malformed
		{"+nisuser", `user "+nisuser" not found in /etc/passwd`}, // NIS lines are not users
		{"dev:nosuchgroup", `group "nosuchgroup" not found in /etc/group`},
		{"5000:badgroup", `group "badgroup" not found in /etc/group`}, // its gid is malformed
		{"2147483648", `uid 2147483648 is out of range`},
		{"99999999999999999999999", `uid 99999999999999999999999 is out of range`},
		{"dev:4294967295", `gid 4294967295 is out of range`},
	} {
		_, err := Lookup(accounts(), tt.spec)
		msg, ok := usererr.Message(err)
		if !ok || !strings.Contains(msg, tt.msg) {
			t.Errorf("Lookup(%q) = %v, want a user error containing %q", tt.spec, err, tt.msg)
		}
	}
}

// Minimal images have no /etc/passwd or /etc/group: root and numeric ids
// still work, names do not.
func TestLookupWithoutFiles(t *testing.T) {
	empty := fstest.MapFS{}
	for _, tt := range []struct {
		spec string
		want User
	}{
		{"", User{Name: "root", Groups: []uint32{0}, Home: "/root"}},
		{"root", User{Name: "root", Groups: []uint32{0}, Home: "/root"}},
		{"1000", User{Name: "1000", UID: 1000, Groups: []uint32{0}, Home: "/"}},
		{"1000:50", User{Name: "1000", UID: 1000, GID: 50, Groups: []uint32{50}, Home: "/"}},
	} {
		got, err := Lookup(empty, tt.spec)
		if err != nil || !equal(got, tt.want) {
			t.Errorf("Lookup(%q) without files = %+v, %v; want %+v", tt.spec, got, err, tt.want)
		}
	}
	for _, spec := range []string{"dev", "1000:dev"} {
		if _, err := Lookup(empty, spec); err == nil {
			t.Errorf("Lookup(%q) without files succeeded", spec)
		} else if _, ok := usererr.Message(err); !ok {
			t.Errorf("Lookup(%q) without files: %v is not a user error", spec, err)
		}
	}
}

func TestLookupFilesElsewhere(t *testing.T) {
	fsys := fstest.MapFS{
		"a/pw": {Data: []byte("dev:x:1000:1000::/home/dev:/bin/sh\n")},
		"b/gr": {Data: []byte("docker:x:999:dev\n")},
	}
	got, err := LookupFiles(fsys, "a/pw", "b/gr", "dev")
	if want := (User{Name: "dev", UID: 1000, GID: 1000, Groups: []uint32{1000, 999}, Home: "/home/dev", Shell: "/bin/sh"}); err != nil || !equal(got, want) {
		t.Errorf("LookupFiles = %+v, %v; want %+v", got, err, want)
	}
	if _, err := LookupFiles(fsys, "a/pw", "b/gr", "ghost"); err == nil || !strings.Contains(err.Error(), "/a/pw") {
		t.Errorf("an unknown user's error names the file read: %v", err)
	}
}

// endless is a file that never ends: an image's /etc/passwd as big as it
// likes. It counts what was read from it.
type endless struct{ read int }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = "x:x:1:1::/:/bin/sh\n"[(e.read+i)%19]
	}
	e.read += len(p)
	return len(p), nil
}
func (e *endless) Close() error               { return nil }
func (e *endless) Stat() (fs.FileInfo, error) { return fileInfo{fs.ModePerm}, nil }

type fileInfo struct{ mode fs.FileMode }

func (fi fileInfo) Name() string       { return "passwd" }
func (fi fileInfo) Size() int64        { return 0 }
func (fi fileInfo) Mode() fs.FileMode  { return fi.mode }
func (fi fileInfo) ModTime() time.Time { return time.Time{} }
func (fi fileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi fileInfo) Sys() any           { return nil }

type oneFile struct {
	name string
	f    fs.File
}

func (o oneFile) Open(name string) (fs.File, error) {
	if name == o.name {
		return o.f, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

// An image whose /etc/passwd never ends is refused after MaxFileSize
// bytes, with a message, instead of being read into memory.
func TestLookupBoundsTheRead(t *testing.T) {
	for _, name := range []string{PasswdFile, GroupFile} {
		e := &endless{}
		_, err := Lookup(oneFile{name, e}, "1000:docker")
		msg, ok := usererr.Message(err)
		if !ok || !strings.Contains(msg, "/"+name+" is larger than") {
			t.Errorf("endless %s: %v, want a user error about its size", name, err)
		}
		if e.read > MaxFileSize+1 {
			t.Errorf("endless %s: %d bytes read, want at most %d", name, e.read, MaxFileSize+1)
		}
	}
}

// A directory, a device or a FIFO planted at /etc/passwd is refused by
// name, never read.
func TestLookupRefusesIrregularFiles(t *testing.T) {
	for name, fsys := range map[string]fs.FS{
		"directory": fstest.MapFS{"etc/passwd/x": {Data: []byte("root:x:0:0::/root:/bin/sh\n")}},
		"fifo":      oneFile{PasswdFile, fifoFile{}},
	} {
		_, err := Lookup(fsys, "dev")
		msg, ok := usererr.Message(err)
		if !ok || !strings.Contains(msg, "/etc/passwd is not a regular file") {
			t.Errorf("%s at /etc/passwd: %v, want a user error", name, err)
		}
	}
}

// fifoFile is a named pipe: reading it would block.
type fifoFile struct{}

func (fifoFile) Read([]byte) (int, error)   { panic("a FIFO was read") }
func (fifoFile) Close() error               { return nil }
func (fifoFile) Stat() (fs.FileInfo, error) { return fileInfo{fs.ModeNamedPipe | 0o644}, nil }

// An error other than a missing file fails the lookup (it is not taken as
// an empty passwd, which would run a named user as someone else).
func TestLookupReadError(t *testing.T) {
	boom := errors.New("boom")
	_, err := Lookup(errFS{boom}, "1000")
	if !errors.Is(err, boom) {
		t.Errorf("Lookup over a failing FS = %v, want %v", err, boom)
	}
}

type errFS struct{ err error }

func (e errFS) Open(name string) (fs.File, error) {
	return nil, &fs.PathError{Op: "open", Path: name, Err: e.err}
}

func TestParse(t *testing.T) {
	p := ParsePasswd([]byte(passwdFile))
	names := make([]string, len(p))
	for i, e := range p {
		names[i] = e.Name
	}
	want := []string{"root", "dev", "noshell", "nohome", "indented", "dup", "dup", "4242", "crlf", "nobody"}
	if !slices.Equal(names, want) {
		t.Errorf("ParsePasswd names = %q, want %q", names, want)
	}
	g := ParseGroup([]byte(groupFile))
	if len(g) != 7 || g[3].Name != "wheel" || !slices.Equal(g[3].Members, []string{"root", "dev"}) {
		t.Errorf("ParseGroup = %+v", g)
	}
	if ParsePasswd(nil) != nil || ParseGroup([]byte("\n\n#x\n")) != nil {
		t.Error("empty files have entries")
	}
}

func equal(a, b User) bool {
	return a.Name == b.Name && a.UID == b.UID && a.GID == b.GID && a.Home == b.Home && a.Shell == b.Shell && slices.Equal(a.Groups, b.Groups)
}
