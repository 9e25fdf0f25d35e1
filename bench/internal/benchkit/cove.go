package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// BuildCove builds ./cmd/cove of the enclosing module into dir.
func BuildCove(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "cove")
	return bin, BuildStatic(ctx, "./cmd/cove", bin)
}

// BuildStatic builds pkg (a path like "./cmd/cove", relative to the
// enclosing module's root) into the static binary bin (CGO_ENABLED=0).
func BuildStatic(ctx context.Context, pkg, bin string) error {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// StepEvent is one "step done" line of the runner's log.
type StepEvent struct {
	Step string
	Took time.Duration
}

// Cove is a running `cove up`.
type Cove struct {
	// Bin is the cove binary; ConfigDir the CLI configuration `cove up`
	// wrote (COVE_CONFIG_DIR); DataDir its data directory; Server the
	// API's URL; SSHAddr the SSH gateway's address; CgroupParent the
	// environments' parent cgroup.
	Bin, ConfigDir, DataDir, Server, SSHAddr, CgroupParent string
	logPath                                                string
	cmd                                                    *exec.Cmd
	exited                                                 chan struct{}
	logFile                                                *os.File

	mu    sync.Mutex
	steps map[string][]StepEvent // by environment id
}

// CoveOptions says how to start `cove up`.
type CoveOptions struct {
	Bin      string   // cove binary
	Runc     string   // runc binary
	Dir      string   // data, configuration and log go below it
	RuncRoot string   // private runc state directory
	Args     []string // more flags for `cove up`
	// CgroupParent is the environments' parent cgroup (default
	// DefaultCgroupParent()).
	CgroupParent string
}

// DefaultCgroupParent is the environments' parent cgroup of this bench
// process's `cove up`: its own, so other cove instances keep theirs.
func DefaultCgroupParent() string { return fmt.Sprintf("cove-bench-%d", os.Getpid()) }

// Pid is the process id of `cove up` (server and runner in one process).
func (c *Cove) Pid() int { return c.cmd.Process.Pid }

// StartCove starts `cove up` with its data under o.Dir and waits until the
// API answers and a runner is active.
func StartCove(ctx context.Context, o CoveOptions) (*Cove, error) {
	api, err := FreePort()
	if err != nil {
		return nil, err
	}
	sshAddr, err := FreePort()
	if err != nil {
		return nil, err
	}
	proxy, err := FreePort()
	if err != nil {
		return nil, err
	}
	c := &Cove{Bin: o.Bin, ConfigDir: filepath.Join(o.Dir, "config"), DataDir: filepath.Join(o.Dir, "data"), Server: "http://" + api,
		SSHAddr: sshAddr, CgroupParent: o.CgroupParent,
		logPath: filepath.Join(o.Dir, "cove-up.log"), exited: make(chan struct{}), steps: map[string][]StepEvent{}}
	if c.CgroupParent == "" {
		c.CgroupParent = DefaultCgroupParent()
	}
	if c.logFile, err = os.Create(c.logPath); err != nil {
		return nil, err
	}
	args := []string{"up", "--data-dir", c.DataDir, "--listen", api,
		"--ssh-listen", sshAddr, "--runc", o.Runc, "--runc-root", o.RuncRoot, "--user", "bench",
		"--cgroup-parent", c.CgroupParent,
		// Its own network, nftables table, proxy port and host uids, so
		// that it meets neither a cove installed on this host nor the
		// e2e tests' instances.
		"--bridge", fmt.Sprintf("cvbench%d", os.Getpid()%100000), "--subnet", "10.217.0.0/16",
		"--nft-table", "cove-bench-" + strconv.Itoa(os.Getpid()), "--proxy-listen", proxy,
		"--uid-range-base", "1073741824",
		// The bench's registry listens on loopback: allow it, as an
		// operator would.
		"--insecure-registry", "127.0.0.1"}
	c.cmd = exec.Command(o.Bin, append(args, o.Args...)...)
	c.cmd.Env = c.Env()
	// Its own process group: ^C in the terminal reaches the bench only,
	// which then deletes its environments through the API before it stops
	// cove up.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.cmd.Stdout = c.logFile
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start cove up: %w", err)
	}
	go c.readLog(stderr)
	go func() {
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	if err := c.waitReady(ctx, time.Minute); err != nil {
		c.Stop()
		c.PrintLogTail(os.Stderr, 40)
		return nil, err
	}
	return c, nil
}

// Env is the environment of cove processes: the bench's own CLI
// configuration, nothing inherited that would point elsewhere.
func (c *Cove) Env() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "COVE_") {
			env = append(env, e)
		}
	}
	return append(env, "COVE_CONFIG_DIR="+c.ConfigDir)
}

var (
	stepDoneRE = regexp.MustCompile(`msg="step done"`)
	envRE      = regexp.MustCompile(`\benv=("?)([^" ]+)`)
	stepRE     = regexp.MustCompile(`\bstep=("?)([^" ]+)`)
	tookRE     = regexp.MustCompile(`\btook=("?)([^" ]+)`)
)

// readLog copies cove up's stderr to the log file and records step lines.
func (c *Cove) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(c.logFile, line)
		if !stepDoneRE.MatchString(line) {
			continue
		}
		env, step, took := envRE.FindStringSubmatch(line), stepRE.FindStringSubmatch(line), tookRE.FindStringSubmatch(line)
		if env == nil || step == nil || took == nil {
			continue
		}
		d, err := time.ParseDuration(took[2])
		if err != nil {
			continue
		}
		c.mu.Lock()
		c.steps[env[2]] = append(c.steps[env[2]], StepEvent{Step: step[2], Took: d})
		c.mu.Unlock()
	}
	_, _ = io.Copy(c.logFile, r)
}

// StepsOf returns the step lines read so far for environment id.
func (c *Cove) StepsOf(id string) []StepEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]StepEvent(nil), c.steps[id]...)
}

// waitReady waits for /healthz, the CLI's login and an active runner.
func (c *Cove) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := c.ready(ctx); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("cove up not ready after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.exited:
			return fmt.Errorf("cove up exited: %s", c.cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cove) ready(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Server+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	tok, err := c.Token()
	if err != nil {
		return err
	}
	rs, err := apiclient.New(http.DefaultClient, c.Server, tok).Runners.ListRunners(ctx, connect.NewRequest(&covev1.ListRunnersRequest{}))
	if err != nil {
		return err
	}
	for _, r := range rs.Msg.Runners {
		if r.Phase == covev1.RunnerPhase_RUNNER_PHASE_ACTIVE {
			return nil
		}
	}
	return fmt.Errorf("no active runner yet")
}

// Token is the CLI token `cove up` wrote.
func (c *Cove) Token() (string, error) {
	b, err := os.ReadFile(filepath.Join(c.ConfigDir, "config.json"))
	if err != nil {
		return "", err
	}
	var cfg struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return "", err
	}
	if cfg.Token == "" {
		return "", fmt.Errorf("no token in config.json yet")
	}
	return cfg.Token, nil
}

// CLI runs the cove CLI and returns its standard output.
func (c *Cove) CLI(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.Bin, args...)
	cmd.Env = c.Env()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("cove %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Stop sends SIGTERM and waits, then SIGKILL.
func (c *Cove) Stop() {
	select {
	case <-c.exited:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(20 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	c.logFile.Close()
}

func (c *Cove) PrintLogTail(w io.Writer, n int) {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	fmt.Fprintf(w, "--- last %d lines of cove up's log ---\n%s\n---\n", len(lines), strings.Join(lines, "\n"))
}

func (c *Cove) CopyLog(dst string) {
	if b, err := os.ReadFile(c.logPath); err == nil {
		_ = os.WriteFile(dst, b, 0o644)
	}
}

// FreePort returns a loopback address that was free a moment ago.
func FreePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// StopFunc is the cleanup of a benchmark's cove up: it prints the tail of
// its log when *failed is set by then, copies the log to keepLog ("" for
// none) and stops it.
func (c *Cove) StopFunc(failed *error, keepLog string) func() {
	return func() {
		if *failed != nil {
			c.PrintLogTail(os.Stderr, 40)
		}
		if keepLog != "" {
			c.CopyLog(keepLog)
		}
		c.Stop()
	}
}
