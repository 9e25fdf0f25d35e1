package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/covedev/cove/internal/agent/agentproto"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

const (
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// outputGrace is how long output is still read after a session's process
	// exited while a background process keeps its stdout or terminal open.
	outputGrace = 200 * time.Millisecond
)

// start runs the session's shell, command or subsystem. It reports whether
// the request succeeded and returns the function that starts the I/O, to be
// called once the request has been answered.
func (s *session) start(kind string, payload []byte) (bool, func()) {
	var arg string
	if kind != "shell" {
		var p struct{ Value string }
		if err := gossh.Unmarshal(payload, &p); err != nil {
			return false, nil
		}
		arg = p.Value
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return false, nil
	}
	opts, optErr := s.takeOptions()
	if kind == "subsystem" && arg == agentproto.LogsSubsystem {
		s.started = true
		return true, func() { go s.serveLogs(opts.logsFollow, opts.logsService) }
	}
	if kind == "subsystem" && arg != "sftp" {
		s.log.Info("unknown subsystem", "name", arg)
		return false, nil
	}
	s.started = true
	if optErr != nil && kind != "subsystem" {
		return true, func() { s.fail(optErr, 1) }
	}

	acct, err := lookupAccount(s.a.cfg.passwdPath, s.a.cfg.groupPath, s.sessionUserSpec())
	if err != nil {
		if kind == "subsystem" {
			s.log.Warn("start sftp", "err", err)
			return false, nil
		}
		return true, func() { s.fail(err, 1) }
	}
	shell := acct.Shell
	if _, err := os.Stat(shell); err != nil {
		shell = defaultShell
	}
	dir := workDir(s.a.cfg.WorkDir, acct.Home)
	if opts.dir != "" {
		dir = opts.dir
	}
	env := s.environ(acct, shell)
	userSession := s.conn.User() == "" || s.conn.User() == agentproto.DefaultUser
	var remoteEnv []string
	if userSession && kind != "subsystem" {
		// Users' sessions (through the gateway) get devcontainer.json's
		// userEnvProbe unless the client chose one, and its remoteEnv.
		if opts.probe == "" {
			opts.probe = s.a.cfg.UserEnvProbe
		}
		if remoteEnv, err = loadRemoteEnv(s.a.cfg.RemoteEnvPath); err != nil {
			s.log.Warn("remoteEnv", "err", err)
		}
	}
	if kind != "subsystem" && opts.probe != "" && opts.probe != agentproto.ProbeNone {
		probed, err := s.a.probeUserEnv(opts.probe, shell, os.ProcAttr{
			Dir: dir, Env: env, Sys: &syscall.SysProcAttr{Credential: credential(acct)},
		})
		if err != nil {
			// The reference CLI goes on without the probed environment.
			s.log.Warn("user env probe", "mode", opts.probe, "err", err)
		}
		env = mergeEnv(env, probed)
	}
	// remoteEnv wins over the probed variables, as in the reference CLI;
	// what the client sends (a lifecycle command's remoteEnv, the user's
	// SendEnv) wins over both.
	env = mergeEnv(mergeEnv(env, remoteEnv), s.env)
	var path string
	var argv []string
	switch {
	case kind == "shell":
		path, argv = shell, []string{"-" + filepath.Base(shell)} // login shell
	case kind == "exec" && opts.argv:
		argv, err = parseArgv(arg)
		if err == nil {
			path, err = lookPath(argv[0], getEnv(env, "PATH"), dir)
		}
		if err != nil {
			code := 1
			if errors.Is(err, errNotFound) {
				code = 127
			}
			return true, func() { s.fail(err, code) }
		}
	case kind == "exec":
		path, argv = shell, []string{shell, "-c", arg}
	case kind == "subsystem":
		path, argv = s.a.cfg.sftpServer[0], s.a.cfg.sftpServer
	}
	attr := &os.ProcAttr{
		Dir: dir,
		Env: env,
		Sys: &syscall.SysProcAttr{Setsid: true, Credential: credential(acct)},
	}
	s.log.Info("session start", "kind", kind, "user", acct.Name, "pty", s.pty != nil && kind != "subsystem", "command", arg)

	launch := func() (func(), error) {
		if s.pty != nil && kind != "subsystem" {
			return s.startPty(path, argv, attr, acct)
		}
		return s.startPipes(path, argv, attr)
	}
	if opts.postAttach && kind != "subsystem" {
		x := attachExec{acct: acct, dir: dir, env: append([]string(nil), env...)}
		return true, func() { go s.attachThenStart(x, launch) }
	}
	then, err := launch()
	if err != nil {
		if kind == "subsystem" {
			s.log.Warn("start sftp", "err", err)
			return false, nil
		}
		return true, func() { s.fail(err, 1) }
	}
	return true, then
}

// startPipes starts a process with its stdin, stdout and stderr connected
// to the channel through pipes.
func (s *session) startPipes(path string, argv []string, attr *os.ProcAttr) (func(), error) {
	var files [6]*os.File // child ends: 0..2, our ends: 3..5
	closeAll := func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}
	var err error
	if files[0], files[3], err = os.Pipe(); err != nil { // stdin
		return nil, err
	}
	if files[4], files[1], err = os.Pipe(); err != nil { // stdout
		closeAll()
		return nil, err
	}
	if files[5], files[2], err = os.Pipe(); err != nil { // stderr
		closeAll()
		return nil, err
	}
	attr.Files = files[:3]
	pr, err := s.a.procs.start(path, argv, attr)
	for _, f := range files[:3] {
		f.Close()
	}
	if err != nil {
		closeAll()
		return nil, err
	}
	s.proc = pr
	stdin, stdout, stderr := files[3], files[4], files[5]
	return func() {
		// Session data is activity: port discovery looks often meanwhile.
		act := s.a.act
		go func() {
			io.Copy(activeWriter{stdin, act}, s.ch)
			stdin.Close() // EOF from the client: EOF for the process
		}()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); io.Copy(activeWriter{s.ch, act}, stdout) }()
		go func() { defer wg.Done(); io.Copy(activeWriter{s.ch.Stderr(), act}, stderr) }()
		go s.finish(pr, &wg, stdout, stderr)
	}, nil
}

// startPty starts a process on a new pseudo-terminal, as its controlling
// terminal.
func (s *session) startPty(path string, argv []string, attr *os.ProcAttr, acct *account) (func(), error) {
	master, tty, err := openPty()
	if err != nil {
		return nil, err
	}
	p := s.pty
	if err := setWinsize(master, p.Columns, p.Rows, p.Width, p.Height); err != nil {
		s.log.Debug("set pty size", "err", err)
	}
	// Like sshd: the user owns their terminal.
	if err := os.Chown(tty.Name(), int(acct.UID), int(acct.GID)); err != nil {
		s.log.Debug("chown pty", "err", err)
	}
	os.Chmod(tty.Name(), 0o620)
	attr.Env = setEnv(attr.Env, "SSH_TTY", tty.Name())
	attr.Files = []*os.File{tty, tty, tty}
	attr.Sys.Setctty = true
	attr.Sys.Ctty = 0
	pr, err := s.a.procs.start(path, argv, attr)
	tty.Close()
	if err != nil {
		master.Close()
		return nil, err
	}
	s.proc = pr
	s.master = master
	return func() {
		// Typing and output are activity: port discovery looks often meanwhile.
		act := s.a.act
		go io.Copy(activeWriter{master, act}, s.ch)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(activeWriter{s.ch, act}, master) }()
		go s.finish(pr, &wg, master)
	}, nil
}

// finish waits for the process and the end of its output (outs), then sends
// its exit status and closes the channel.
func (s *session) finish(pr *proc, copies *sync.WaitGroup, outs ...*os.File) {
	ws := pr.wait()
	done := make(chan struct{})
	go func() { copies.Wait(); close(done) }()
	// Output is complete at EOF. A background process may keep the output
	// open forever: once what the process left is drained, stop reading.
	t := time.NewTicker(outputGrace)
	defer t.Stop()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-t.C:
			if drained(outs) {
				break wait
			}
		}
	}
	for _, f := range outs {
		f.Close()
	}
	<-done
	s.ch.CloseWrite()
	sendExit(s.ch, ws)
	s.ch.Close()
	s.log.Info("session end", "status", exitDescription(ws))
}

// drained reports whether none of files has unread data.
func drained(files []*os.File) bool {
	for _, f := range files {
		rc, err := f.SyscallConn()
		if err != nil {
			continue
		}
		n := 0
		rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
		if n > 0 {
			return false
		}
	}
	return true
}

// fail reports a session that could not start to the client, with exit
// status code.
func (s *session) fail(err error, code int) {
	s.log.Warn("start session", "err", err)
	fmt.Fprintf(s.ch.Stderr(), "cove agent: %v\r\n", err)
	s.ch.CloseWrite()
	sendExit(s.ch, syscall.WaitStatus(code<<8))
	s.ch.Close()
}

// sendExit sends "exit-signal" for a process killed by a signal, otherwise
// "exit-status".
func sendExit(ch gossh.Channel, ws syscall.WaitStatus) {
	code := ws.ExitStatus()
	if ws.Signaled() {
		if name := sshSignalName(ws.Signal()); name != "" {
			msg := struct {
				Signal     string
				CoreDumped bool
				Error      string
				Lang       string
			}{name, ws.CoreDump(), "", ""}
			ch.SendRequest("exit-signal", false, gossh.Marshal(&msg))
			return
		}
		code = 128 + int(ws.Signal())
	}
	ch.SendRequest("exit-status", false, gossh.Marshal(&struct{ Status uint32 }{uint32(code)}))
}

func exitDescription(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("exit %d", ws.ExitStatus())
}

// environ builds a session's environment: the image's, then the user's
// identity, then what the client sent.
func (s *session) environ(acct *account, shell string) []string {
	env := append([]string(nil), s.a.cfg.Env...)
	if getEnv(env, "PATH") == "" {
		env = setEnv(env, "PATH", defaultPath)
	}
	env = setEnv(env, "HOME", acct.Home)
	env = setEnv(env, "USER", acct.Name)
	env = setEnv(env, "LOGNAME", acct.Name)
	env = setEnv(env, "SHELL", shell)
	if s.pty != nil {
		term := s.pty.Term
		if term == "" {
			term = "xterm"
		}
		env = setEnv(env, "TERM", term)
	}
	for _, kv := range s.env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			env = setEnv(env, k, v)
		}
	}
	return env
}

func getEnv(env []string, key string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

func setEnv(env []string, key, val string) []string {
	for i, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); ok && k == key {
			env[i] = key + "=" + val
			return env
		}
	}
	return append(env, key+"="+val)
}

// workDir returns dir if it is a directory, else home, else "/".
func workDir(dir, home string) string {
	for _, d := range []string{dir, home} {
		if d == "" {
			continue
		}
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
	}
	return "/"
}

// credential returns the process credential for acct; nil when the agent
// already runs as that user without privileges to switch (tests).
func credential(acct *account) *syscall.Credential {
	if os.Geteuid() != 0 && acct.UID == uint32(os.Geteuid()) {
		return nil
	}
	return &syscall.Credential{Uid: acct.UID, Gid: acct.GID, Groups: acct.Groups}
}
