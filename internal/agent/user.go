package agent

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/covedev/cove/internal/passwd"
)

const (
	defaultPasswdPath = "/etc/passwd"
	defaultGroupPath  = "/etc/group"
	defaultShell      = "/bin/sh"
)

// account is a resolved session user: package passwd's rules, the ones
// the runner resolves the image's user with.
type account = passwd.User

// lookupAccount resolves spec ("name", "uid", "name:group", "uid:gid", as in
// an OCI image config's User field; "" means root) against the passwd and
// group files of the environment (absolute paths, read as the agent sees
// them). A user without a login shell gets defaultShell.
func lookupAccount(passwdPath, groupPath, spec string) (*account, error) {
	u, err := passwd.LookupFiles(os.DirFS("/"), fsName(passwdPath), fsName(groupPath), spec)
	if err != nil {
		return nil, err
	}
	if u.Shell == "" {
		u.Shell = defaultShell
	}
	return &u, nil
}

// fsName is absolute path p as a name in os.DirFS("/").
func fsName(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	return strings.TrimPrefix(filepath.Clean(p), "/")
}
