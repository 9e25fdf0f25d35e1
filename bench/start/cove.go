package main

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
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// buildCove builds ./cmd/cove of the enclosing module into dir.
func buildCove(ctx context.Context, dir string) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(dir, "cove")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/cove")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build cove: %w\n%s", err, b)
	}
	return bin, nil
}

// stepEvent is one "step done" line of the runner's log.
type stepEvent struct {
	step string
	took time.Duration
}

// cove is a running `cove up`.
type cove struct {
	bin, configDir, dataDir, server, logPath string
	cmd                                      *exec.Cmd
	exited                                   chan struct{}
	logFile                                  *os.File

	mu    sync.Mutex
	steps map[string][]stepEvent // by environment id
}

// startCove starts `cove up` with its data under dir and waits until the
// API answers and a runner is active.
func startCove(ctx context.Context, bin, runc, dir, runcRoot string) (*cove, error) {
	api, err := freePort()
	if err != nil {
		return nil, err
	}
	sshAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &cove{bin: bin, configDir: filepath.Join(dir, "config"), dataDir: filepath.Join(dir, "data"), server: "http://" + api,
		logPath: filepath.Join(dir, "cove-up.log"), exited: make(chan struct{}), steps: map[string][]stepEvent{}}
	if c.logFile, err = os.Create(c.logPath); err != nil {
		return nil, err
	}
	c.cmd = exec.Command(bin, "up", "--data-dir", c.dataDir, "--listen", api,
		"--ssh-listen", sshAddr, "--runc", runc, "--runc-root", runcRoot, "--user", "bench",
		// The bench's registry listens on loopback: allow it, as an
		// operator would.
		"--insecure-registry", "127.0.0.1")
	c.cmd.Env = c.env()
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
		c.stop()
		c.printLogTail(os.Stderr, 40)
		return nil, err
	}
	return c, nil
}

// env is the environment of cove processes: the bench's own CLI
// configuration, nothing inherited that would point elsewhere.
func (c *cove) env() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "COVE_") {
			env = append(env, e)
		}
	}
	return append(env, "COVE_CONFIG_DIR="+c.configDir)
}

var (
	stepDoneRE = regexp.MustCompile(`msg="step done"`)
	envRE      = regexp.MustCompile(`\benv=("?)([^" ]+)`)
	stepRE     = regexp.MustCompile(`\bstep=("?)([^" ]+)`)
	tookRE     = regexp.MustCompile(`\btook=("?)([^" ]+)`)
)

// readLog copies cove up's stderr to the log file and records step lines.
func (c *cove) readLog(r io.Reader) {
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
		c.steps[env[2]] = append(c.steps[env[2]], stepEvent{step: step[2], took: d})
		c.mu.Unlock()
	}
	_, _ = io.Copy(c.logFile, r)
}

// stepsOf returns the step lines read so far for environment id.
func (c *cove) stepsOf(id string) []stepEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]stepEvent(nil), c.steps[id]...)
}

// waitReady waits for /healthz, the CLI's login and an active runner.
func (c *cove) waitReady(ctx context.Context, timeout time.Duration) error {
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

func (c *cove) ready(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.server+"/healthz", nil)
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
	tok, err := c.token()
	if err != nil {
		return err
	}
	rs, err := apiclient.New(http.DefaultClient, c.server, tok).Runners.ListRunners(ctx, connect.NewRequest(&covev1.ListRunnersRequest{}))
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

// token is the CLI token `cove up` wrote.
func (c *cove) token() (string, error) {
	b, err := os.ReadFile(filepath.Join(c.configDir, "config.json"))
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

// cli runs the cove CLI and returns its standard output.
func (c *cove) cli(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = c.env()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("cove %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// stop sends SIGTERM and waits, then SIGKILL.
func (c *cove) stop() {
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

func (c *cove) printLogTail(w io.Writer, n int) {
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

func (c *cove) copyLog(dst string) {
	if b, err := os.ReadFile(c.logPath); err == nil {
		_ = os.WriteFile(dst, b, 0o644)
	}
}

// freePort returns a loopback address that was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
