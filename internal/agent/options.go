package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/guest"
)

const (
	// DefaultLogPath is where the runner bind-mounts the lifecycle log
	// (read-only) inside the environment.
	DefaultLogPath = guest.LifecycleLog
)

// sessionOptions are the control variables a client sent; they are not
// passed on to the session's process.
type sessionOptions struct {
	probe       string
	argv        bool
	logsFollow  bool
	logsService string // "" for the lifecycle log
	dir         string
	postAttach  bool
}

// takeOptions removes the control variables from s.env and parses them.
// s.mu must be held.
func (s *session) takeOptions() (sessionOptions, error) {
	var o sessionOptions
	env := s.env[:0:0]
	for _, kv := range s.env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case agentproto.EnvUserEnvProbe:
			o.probe = v
		case agentproto.EnvExecArgv:
			o.argv = v == "1"
		case agentproto.EnvLogsFollow:
			o.logsFollow = v == "1"
		case agentproto.EnvLogsService:
			o.logsService = v
		case agentproto.EnvWorkDir:
			o.dir = v
		case agentproto.EnvPostAttach:
			o.postAttach = v == "1"
		default:
			env = append(env, kv)
		}
	}
	s.env = env
	if !agentproto.ValidProbe(o.probe) {
		return o, fmt.Errorf("unknown %s value %q", agentproto.EnvUserEnvProbe, o.probe)
	}
	if o.dir != "" {
		if !filepath.IsAbs(o.dir) {
			return o, fmt.Errorf("working directory %q is not absolute", o.dir)
		}
		if fi, err := os.Stat(o.dir); err != nil || !fi.IsDir() {
			return o, fmt.Errorf("working directory %s does not exist", o.dir)
		}
	}
	return o, nil
}

// sessionUserSpec returns the user a connection's sessions run as. The
// runner's gateway always logs in as agentproto.DefaultUser, so users reaching the
// environment through it get Config.User. Only the runner's own client
// (agentclient) uses other login names, to run lifecycle commands as the
// devcontainer's remoteUser. Both authenticate with the runner's key: the
// agent trusts whoever holds that key to pick any user, which is no more
// than it could do anyway (root inside the environment is reachable as
// agentproto.DefaultUser when Config.User is root, and the runner controls the
// container).
func (s *session) sessionUserSpec() string {
	if u := s.conn.User(); u != "" && u != agentproto.DefaultUser {
		return u
	}
	return s.a.cfg.User
}

// parseArgv parses an exec payload sent with agentproto.EnvExecArgv=1.
func parseArgv(cmd string) ([]string, error) {
	var argv []string
	if err := json.Unmarshal([]byte(cmd), &argv); err != nil {
		return nil, fmt.Errorf("exec: command is not a JSON array of strings: %w", err)
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("exec: empty command")
	}
	return argv, nil
}

// errNotFound reports a program missing from PATH (exit status 127, as a
// shell would).
var errNotFound = errors.New("command not found")

// lookPath finds name like execvp does, in pathEnv. A name with a slash is
// used as is (relative to dir).
func lookPath(name, pathEnv, dir string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if isExecutable(p) {
			return name, nil
		}
		return "", fmt.Errorf("%s: %w", name, errNotFound)
	}
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, errNotFound)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
