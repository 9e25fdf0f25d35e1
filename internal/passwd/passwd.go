// Package passwd resolves the user of an OCI image config ("name", "uid",
// "name:group", "uid:gid") against an image's /etc/passwd and /etc/group,
// read through an fs.FS: the runner gives it the image's root file system
// (confined, links never lead out of it), the agent the environment's own
// "/". It is the one reader of these files in cove, with the rules of
// runc's libcontainer/user GetExecUser (what Docker and containerd run):
//
//   - a numeric user is always a uid (never a name); a uid that passwd does
//     not list is allowed, with gid 0 and home "/";
//   - a named user must be in passwd; its primary group is passwd's gid;
//   - an explicit group, by name or number, replaces the primary group; a
//     numeric gid that /etc/group does not list is allowed, a name must be
//     there; the user then has no supplementary groups;
//   - without an explicit group, the user's supplementary groups are the
//     groups of /etc/group that list its name;
//   - the first matching line wins; blank lines, comments (#), NIS lines
//     (+/-) and malformed lines are skipped; a missing file is empty.
//
// One addition: "" and "root" are uid 0 even when passwd has no root entry
// (home /root), so images without /etc/passwd run as root.
//
// The package is pure: it reads only through the fs.FS it is given.
package passwd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"

	"github.com/covedev/cove/internal/usererr"
)

// MaxFileSize bounds /etc/passwd and /etc/group: a larger file is refused
// (an image could otherwise make the reader hold anything it likes).
const MaxFileSize = 4 << 20

// maxID is the largest uid or gid a user spec may name (runc's range, which
// keeps clear of (uid_t)-1).
const maxID = 1<<31 - 1

// The account files, as names in an fs.FS rooted at "/".
const (
	PasswdFile = "etc/passwd"
	GroupFile  = "etc/group"
)

// Entry is a line of /etc/passwd.
type Entry struct {
	Name  string
	UID   uint32
	GID   uint32
	Home  string
	Shell string
}

// Group is a line of /etc/group.
type Group struct {
	Name    string
	GID     uint32
	Members []string
}

// User is a resolved user spec.
type User struct {
	// Name is the login name; the uid as written when passwd has no entry
	// for it.
	Name string
	UID  uint32
	GID  uint32
	// Groups is GID followed by the supplementary groups, without
	// duplicates.
	Groups []uint32
	// Home is passwd's home directory, "/" when it has none (or no entry).
	Home string
	// Shell is passwd's login shell, "" when it has none (or no entry).
	Shell string
}

// Lookup resolves spec against fsys's etc/passwd and etc/group.
func Lookup(fsys fs.FS, spec string) (User, error) {
	return LookupFiles(fsys, PasswdFile, GroupFile, spec)
}

// LookupFiles resolves spec against the passwd and group files named
// passwdName and groupName in fsys. Errors a user can fix (an unknown user
// or group, an id out of range, a file too large or not a regular file)
// are usererr errors naming the file as "/"+name.
func LookupFiles(fsys fs.FS, passwdName, groupName, spec string) (User, error) {
	userArg, groupArg, _ := strings.Cut(spec, ":") // "user:" is "user", as in runc
	uidArg, isUID, err := parseArg(userArg, "uid", spec)
	if err != nil {
		return User{}, err
	}
	gidArg, isGID, err := parseArg(groupArg, "gid", spec)
	if err != nil {
		return User{}, err
	}

	passwdData, err := readFile(fsys, passwdName)
	if err != nil {
		return User{}, err
	}
	var entry *Entry
	for _, e := range ParsePasswd(passwdData) {
		if userArg == "" && e.UID == 0 || isUID && e.UID == uidArg || !isUID && userArg != "" && e.Name == userArg {
			entry = &e
			break
		}
	}

	u := User{Home: "/"}
	switch {
	case entry != nil:
		u.Name, u.UID, u.GID, u.Shell = entry.Name, entry.UID, entry.GID, entry.Shell
		if entry.Home != "" {
			u.Home = entry.Home
		}
	case userArg == "" || userArg == "root" || isUID && uidArg == 0:
		u.Name, u.Home = "root", "/root"
	case isUID:
		u.Name, u.UID = userArg, uidArg
	default:
		return User{}, usererr.New("user %q not found in /%s (use a user listed there, or a numeric uid)", userArg, passwdName)
	}

	if groupArg == "" && entry == nil {
		u.Groups = []uint32{u.GID}
		return u, nil
	}
	groupData, err := readFile(fsys, groupName)
	if err != nil {
		return User{}, err
	}
	groups := ParseGroup(groupData)
	if groupArg != "" {
		found := false
		for _, g := range groups {
			if isGID && g.GID == gidArg || !isGID && g.Name == groupArg {
				u.GID, found = g.GID, true
				break
			}
		}
		if !found && !isGID {
			return User{}, usererr.New("group %q not found in /%s (use a group listed there, or a numeric gid)", groupArg, groupName)
		}
		if !found {
			u.GID = gidArg
		}
		u.Groups = []uint32{u.GID}
		return u, nil
	}
	u.Groups = []uint32{u.GID}
	for _, g := range groups {
		if isMember(g, entry.Name) && !contains(u.Groups, g.GID) {
			u.Groups = append(u.Groups, g.GID)
		}
	}
	return u, nil
}

// parseArg reads the user or group part of a spec: numeric (an id in
// range) or a name.
func parseArg(s, what, spec string) (uint32, bool, error) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if errors.Is(err, strconv.ErrSyntax) {
		return 0, false, nil // a name that starts with a digit
	}
	if err != nil || n > maxID {
		return 0, true, usererr.New("user %q: %s %s is out of range (0-%d)", spec, what, s, maxID)
	}
	return uint32(n), true, nil
}

// readFile reads name from fsys, at most MaxFileSize bytes; a missing file
// is empty.
func readFile(fsys fs.FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read /%s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read /%s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, usererr.New("/%s is not a regular file", name)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read /%s: %w", name, err)
	}
	if len(b) > MaxFileSize {
		return nil, usererr.New("/%s is larger than %d MiB, more than cove reads", name, MaxFileSize>>20)
	}
	return b, nil
}

// lines calls fn with the colon-separated fields of each line of data
// that is not blank, a comment or an NIS entry.
func lines(data []byte, fn func(fields []string)) {
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte("\n"))
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		fn(strings.Split(string(line), ":"))
	}
}

// parseID reads an id field of a passwd or group line.
func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// ParsePasswd returns the well-formed entries of a passwd file
// (name:password:uid:gid:gecos:home:shell), in order.
func ParsePasswd(data []byte) []Entry {
	var out []Entry
	lines(data, func(f []string) {
		if len(f) < 4 || f[0] == "" {
			return
		}
		uid, ok1 := parseID(f[2])
		gid, ok2 := parseID(f[3])
		if !ok1 || !ok2 {
			return
		}
		e := Entry{Name: f[0], UID: uid, GID: gid}
		if len(f) > 5 {
			e.Home = f[5]
		}
		if len(f) > 6 {
			e.Shell = f[6]
		}
		out = append(out, e)
	})
	return out
}

// ParseGroup returns the well-formed entries of a group file
// (name:password:gid:member,member), in order.
func ParseGroup(data []byte) []Group {
	var out []Group
	lines(data, func(f []string) {
		if len(f) < 3 || f[0] == "" {
			return
		}
		gid, ok := parseID(f[2])
		if !ok {
			return
		}
		g := Group{Name: f[0], GID: gid}
		if len(f) > 3 {
			for _, m := range strings.Split(f[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					g.Members = append(g.Members, m)
				}
			}
		}
		out = append(out, g)
	})
	return out
}

func isMember(g Group, name string) bool {
	for _, m := range g.Members {
		if m == name {
			return true
		}
	}
	return false
}

func contains(ids []uint32, id uint32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
