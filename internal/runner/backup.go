package runner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	goruntime "runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/backupfs"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/resources"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// backupWork is the name of the work cgroup backups and restores run in.
const backupWork = "backup"

// BackupConfig configures the runner's backups (docs/backups.md).
type BackupConfig struct {
	// Limits of the backup child's work cgroup (with Config.CgroupParent);
	// nil: the child runs in the runner's cgroup.
	Limits *WorkLimits
	// Interval between backups of a running environment (skipped when
	// nothing changed); 0: none while running.
	Interval time.Duration
	// FreezeMax bounds how long a running environment stays frozen for a
	// backup's walk (default 30 s); past it the environment is thawed and
	// the backup finishes from a view that may not be consistent.
	FreezeMax time.Duration
	// SalvageWarnAfter: a released copy whose salvage backup has failed
	// for this long is still kept (and tried), every failure now logged
	// as an error for the operator (default 7 days; step_salvage.go).
	SalvageWarnAfter time.Duration
}

// cgroupFreezer is resources.Freezer (tests use a fake hierarchy).
type cgroupFreezer interface {
	Freeze(ctx context.Context, p string) error
	Thaw(p string) error
	Thawed(p string) (bool, error)
}

// childStarter starts a backup child: its stdin, stdout, and wait. The
// calling goroutine keeps its thread until wait returned (Pdeathsig).
type childStarter func(ctx context.Context) (stdin io.WriteCloser, stdout io.ReadCloser, wait func() error, err error)

// maxBackupChildren is how many backups and restores run at once on a
// runner: they share the work cgroup's memory (--backup-memory), which a
// few children fit in whatever the number of environments whose periodic
// backups fall due together; the others wait their turn.
const maxBackupChildren = 2

// backups is the runner's backup machinery.
type backups struct {
	cfg      BackupConfig
	freezer  cgroupFreezer
	start    childStarter
	slots    chan struct{} // maxBackupChildren
	disabled sync.Once     // logs "backups disabled" once
}

func newBackups(cfg Config, log *slog.Logger) *backups {
	b := &backups{cfg: cfg.Backup, freezer: resources.HostFreezer(), slots: make(chan struct{}, maxBackupChildren)}
	if b.cfg.FreezeMax <= 0 {
		b.cfg.FreezeMax = 30 * time.Second
	}
	if b.cfg.SalvageWarnAfter <= 0 {
		b.cfg.SalvageWarnAfter = defaultSalvageWarnAfter
	}
	var cg *unpackCgroup
	if cfg.CgroupParent != "" && cfg.Backup.Limits != nil {
		cg = &unpackCgroup{log: log, parent: cfg.CgroupParent, name: backupWork, dataDir: cfg.DataDir, limits: *cfg.Backup.Limits}
	}
	b.start = processChild(cfg.AgentBinary, cg)
	return b
}

// processChild starts `bin internal-backup`, placed in the work cgroup
// (when cg is set) before it reads its job. It dies with the runner.
func processChild(bin string, cg *unpackCgroup) childStarter {
	return func(ctx context.Context) (io.WriteCloser, io.ReadCloser, func() error, error) {
		var w *resources.WorkCgroup
		if cg != nil {
			var err error
			if w, err = cg.acquire(); err != nil {
				return nil, nil, nil, fmt.Errorf("backup work cgroup: %w", err)
			}
		}
		release := func() {
			if cg != nil {
				cg.release()
			}
		}
		cmd := exec.CommandContext(ctx, bin, "internal-backup")
		var stderr bytes.Buffer
		cmd.Stderr = &capped{b: &stderr, n: 4096}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			release()
			return nil, nil, nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			release()
			return nil, nil, nil, err
		}
		// Born outside the runner's weighted cgroup (selfcgroup.go), then
		// moved into the backup's work cgroup before it reads anything.
		if err := resources.StartChild(cmd); err != nil {
			release()
			return nil, nil, nil, fmt.Errorf("start the backup process: %w", err)
		}
		if w != nil {
			// Before the job is written: nothing is read outside the
			// cgroup's limits.
			if err := w.Add(cmd.Process.Pid); err != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				release()
				return nil, nil, nil, err
			}
		}
		wait := func() error {
			defer release()
			err := cmd.Wait()
			var ee *exec.ExitError
			if err != nil && errors.As(err, &ee) && ctx.Err() == nil {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
					return errors.New("the backup process was killed, most likely for lack of memory: raise the runner's --backup-memory")
				}
			}
			if err != nil {
				if msg := strings.TrimSpace(stderr.String()); msg != "" {
					return fmt.Errorf("%w: %s", err, msg)
				}
			}
			return err
		}
		return stdin, stdout, wait, nil
	}
}

// errBackupsDisabled: the server gives no backup storage.
var errBackupsDisabled = errors.New("backups are not enabled on this server")

// access asks the server for the environment's backup storage and key.
// Unimplemented or no storage: backups are disabled (logged once).
func (r *Runner) backupAccess(ctx context.Context, id string) (json.RawMessage, []byte, error) {
	if r.client == nil {
		return nil, nil, errBackupsDisabled
	}
	resp, err := r.client.api.GetBackupAccess(ctx, connect.NewRequest(&covev1.GetBackupAccessRequest{EnvironmentId: id}))
	if connect.CodeOf(err) == connect.CodeUnimplemented || (err == nil && resp.Msg.GetStorage() == nil) {
		r.bk.disabled.Do(func() { r.log.Info("backups are disabled on the server: environments are not backed up") })
		return nil, nil, errBackupsDisabled
	}
	if err != nil {
		err = fmt.Errorf("backup access: %w", err)
		switch connect.CodeOf(err) {
		case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeAborted, connect.CodeResourceExhausted:
			err = errdefs.Unavailable(err) // the server will answer later
		}
		return nil, nil, err
	}
	raw, err := protojson.Marshal(resp.Msg.GetStorage())
	if err != nil {
		return nil, nil, err
	}
	return raw, resp.Msg.GetKey(), nil
}

// childRun is what one run of the child gave.
type childRun struct {
	final      jobEvent
	frozen     time.Duration
	consistent bool // frozen for the whole walk (or nothing to freeze)
}

// runChild runs job in a child. freeze, if set, is the cgroup frozen for
// the walk (bounded by FreezeMax, always thawed before this returns).
func (r *Runner) runChild(ctx context.Context, job *backupJob, freeze string, progress func(backupfs.Progress)) (childRun, error) {
	select {
	case r.bk.slots <- struct{}{}:
		defer func() { <-r.bk.slots }()
	case <-ctx.Done():
		return childRun{}, ctx.Err()
	}
	goruntime.LockOSThread() // Pdeathsig: the child's parent thread lives until it is gone
	defer goruntime.UnlockOSThread()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stdin, stdout, wait, err := r.bk.start(ctx)
	if err != nil {
		return childRun{}, err
	}
	run := childRun{consistent: true}
	events := make(chan jobEvent)
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			var e jobEvent
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				readErr <- fmt.Errorf("backup process output: %w", err)
				return
			}
			select {
			case events <- e:
			case <-ctx.Done():
				return
			}
		}
		readErr <- sc.Err()
	}()
	b, err := json.Marshal(job)
	if err == nil {
		_, err = stdin.Write(append(b, '\n'))
	}
	clear(b) // the key
	var (
		thaw   func()
		timer  <-chan time.Time
		frozen time.Time
	)
	defer func() {
		if thaw != nil {
			thaw()
		}
	}()
	for err == nil {
		select {
		case e := <-events:
			switch {
			case e.Ready:
				if freeze != "" {
					fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
					ferr := r.bk.freezer.Freeze(fctx, freeze)
					fcancel()
					if ferr != nil {
						r.log.Warn("backup without freezing: the view may not be consistent", "cgroup", freeze, "err", ferr)
						run.consistent = false
					} else {
						frozen = r.clock.Now()
						timer = r.clock.After(r.bk.cfg.FreezeMax)
						thaw = func() {
							run.frozen = r.clock.Since(frozen)
							if terr := r.bk.freezer.Thaw(freeze); terr != nil {
								r.log.Error("thaw after a backup", "cgroup", freeze, "err", terr)
							}
						}
					}
				}
				_, err = io.WriteString(stdin, "walk\n")
			case e.Progress != nil:
				if progress != nil {
					progress(*e.Progress)
				}
			default:
				run.final = e
				if thaw != nil {
					thaw()
					thaw = nil
				}
				stdin.Close()
				return run, wait()
			}
		case <-timer:
			r.log.Warn("backup walk longer than --backup-freeze-max: thawed; the backup goes on from a view that may not be consistent", "cgroup", freeze, "max", r.bk.cfg.FreezeMax)
			thaw()
			thaw, timer, run.consistent = nil, nil, false
		case rerr := <-readErr:
			if rerr == nil {
				rerr = errors.New("the backup process ended without a result")
			}
			err = rerr
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if thaw != nil {
		thaw()
		thaw = nil
	}
	cancel() // kills the child
	stdin.Close()
	if werr := wait(); werr != nil && ctx.Err() == nil {
		err = errors.Join(err, werr)
	}
	return run, err
}

// thawAll thaws every environment a runner killed mid-backup left frozen
// (it runs at start, before any worker).
func (r *Runner) thawAll() {
	if r.cfg.CgroupParent == "" {
		return
	}
	ents, err := os.ReadDir(envdir.Root(r.cfg.DataDir))
	if err != nil {
		return
	}
	for _, e := range ents {
		p := resources.CgroupPath(r.cfg.CgroupParent, e.Name())
		if thawed, err := r.bk.freezer.Thawed(p); err != nil || thawed {
			continue
		}
		if err := r.bk.freezer.Thaw(p); err != nil {
			r.log.Error("thaw an environment left frozen", "env", e.Name(), "err", err)
			continue
		}
		r.log.Warn("thawed an environment a previous runner left frozen (killed during a backup)", "env", e.Name())
	}
}

// report is how a step has the status sent again (backup progress).
func (p *workerReporter) report() {
	p.mu.Lock()
	ph := p.phase
	p.mu.Unlock()
	p.w.progress(p.ctx, p.status(ph))
}
