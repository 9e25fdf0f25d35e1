package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/covedev/cove/internal/usererr"
)

const (
	defaultPasswdPath = "/etc/passwd"
	defaultGroupPath  = "/etc/group"
	defaultShell      = "/bin/sh"
)

// account is a resolved session user.
type account struct {
	Name   string // login name; the numeric uid when the user is not in passwd
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups, including GID
	Home   string
	Shell  string
}

type passwdEntry struct {
	name  string
	uid   uint32
	gid   uint32
	home  string
	shell string
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// lookupAccount resolves spec ("name", "uid", "name:group", "uid:gid", as in
// an OCI image config's User field; "" means root) against the passwd and
// group files of the environment.
func lookupAccount(passwdPath, groupPath, spec string) (*account, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" {
		userPart = "0"
	}
	users, err := readPasswd(passwdPath)
	if err != nil {
		return nil, err
	}
	groups, err := readGroups(groupPath)
	if err != nil {
		return nil, err
	}

	acct := &account{}
	var found *passwdEntry
	for i := range users {
		if users[i].name == userPart {
			found = &users[i]
			break
		}
	}
	if found == nil {
		uid, err := parseID(userPart)
		if err != nil {
			return nil, usererr.New("user %q not found in %s", userPart, passwdPath)
		}
		for i := range users {
			if users[i].uid == uid {
				found = &users[i]
				break
			}
		}
		if found == nil {
			// A numeric uid need not exist in passwd (OCI semantics).
			acct.Name = userPart
			acct.UID = uid
			acct.GID = uid
			acct.Home = "/"
			if uid == 0 {
				acct.Name, acct.Home = "root", "/root"
			}
		}
	}
	if found != nil {
		acct.Name = found.name
		acct.UID = found.uid
		acct.GID = found.gid
		acct.Home = found.home
		acct.Shell = found.shell
	}
	if acct.Home == "" {
		acct.Home = "/"
	}
	if acct.Shell == "" {
		acct.Shell = defaultShell
	}

	if hasGroup && groupPart != "" {
		gid, ok := uint32(0), false
		for _, g := range groups {
			if g.name == groupPart {
				gid, ok = g.gid, true
				break
			}
		}
		if !ok {
			id, err := parseID(groupPart)
			if err != nil {
				return nil, usererr.New("group %q not found in %s", groupPart, groupPath)
			}
			gid = id
		}
		acct.GID = gid
	}

	acct.Groups = []uint32{acct.GID}
	for _, g := range groups {
		if g.gid == acct.GID {
			continue
		}
		for _, m := range g.members {
			if m == acct.Name {
				acct.Groups = append(acct.Groups, g.gid)
				break
			}
		}
	}
	return acct, nil
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, err
	}
	return uint32(n), nil
}

// readColonFile calls fn with the fields of each non-comment line of path.
// A missing file is treated as empty (minimal images may have none).
func readColonFile(path string, fn func(fields []string)) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		fn(strings.Split(line, ":"))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

func readPasswd(path string) ([]passwdEntry, error) {
	var out []passwdEntry
	err := readColonFile(path, func(f []string) {
		// name:password:uid:gid:gecos:home:shell
		if len(f) < 4 {
			return
		}
		uid, err1 := parseID(f[2])
		gid, err2 := parseID(f[3])
		if err1 != nil || err2 != nil {
			return
		}
		e := passwdEntry{name: f[0], uid: uid, gid: gid}
		if len(f) > 5 {
			e.home = f[5]
		}
		if len(f) > 6 {
			e.shell = f[6]
		}
		out = append(out, e)
	})
	return out, err
}

func readGroups(path string) ([]groupEntry, error) {
	var out []groupEntry
	err := readColonFile(path, func(f []string) {
		// name:password:gid:member,member
		if len(f) < 3 {
			return
		}
		gid, err := parseID(f[2])
		if err != nil {
			return
		}
		e := groupEntry{name: f[0], gid: gid}
		if len(f) > 3 && f[3] != "" {
			for _, m := range strings.Split(f[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					e.members = append(e.members, m)
				}
			}
		}
		out = append(out, e)
	})
	return out, err
}
