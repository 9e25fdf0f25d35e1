package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"time"

	"github.com/covedev/cove/internal/backupfs"
	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob/localblob"
	"golang.org/x/sys/unix"
)

// coveTool is cove's backup: internal/backupfs over a backuprepo.Repo on
// a localblob store, called in this process (as the runner's backup child
// calls it), with a fresh organization key per round. The workspace is
// one source named "workspace"; files owned by host root are root inside
// (an id map of base 0).
type coveTool struct {
	dir     string
	store   io.Closer
	syncfs  *syncfsStore // the experiment's store, nil for localblob
	repo    *backuprepo.Repo
	latest  string // the latest committed backup
	profile string // directory for CPU profiles of each step, or ""
}

var benchMap = backupfs.IDMap{HostUID: 0, HostGID: 0, Size: 65536}

// newCoveTool makes cove's tool on localblob or, with syncfs, on the
// experiment's store without per-object fsync (one syncfs at the end of
// each backup step, timed).
func newCoveTool(dir, profile string, syncfs, packs bool) (*coveTool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	raw, err := backuprepo.NewKey()
	if err != nil {
		return nil, err
	}
	key, err := backuprepo.ParseKey(raw)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.DiscardHandler)
	t := &coveTool{dir: dir, profile: profile}
	if syncfs {
		if t.syncfs, err = newSyncfsStore(t.storage()); err != nil {
			return nil, err
		}
		t.store, t.repo = io.NopCloser(nil), backuprepo.New(t.syncfs, key, log)
		t.repo.SetPacks(packs)
		return t, nil
	}
	st, err := localblob.New(t.storage(), log, localblob.BatchedSync(key.ID())) // as the runner opens it
	if err != nil {
		return nil, err
	}
	t.store, t.repo = st, backuprepo.New(st, key, log)
	t.repo.SetPacks(packs)
	return t, nil
}

func (t *coveTool) name() string {
	if t.syncfs != nil {
		return "cove-syncfs"
	}
	return "cove"
}
func (t *coveTool) storage() string { return filepath.Join(t.dir, "store") }
func (t *coveTool) close()          { t.store.Close() }

var coveNames = [nSteps]string{"full", "incr", "incr-warm", "noop", ""}

func (t *coveTool) backup(ctx context.Context, src string, s step) (u usage, err error) {
	defer t.measure(s, &u)()
	opts := backupfs.BackupOptions{Map: benchMap}
	if t.latest != "" {
		prev, err := t.repo.OpenManifest(ctx, t.latest)
		if err != nil {
			return u, fmt.Errorf("open previous backup: %w", err)
		}
		opts.Previous = prev
	}
	w, err := t.repo.NewWriter(ctx, coveNames[s], backuprepo.Metadata{Time: time.Now(), Trigger: "bench", Previous: t.latest})
	if err != nil {
		return u, err
	}
	res, err := backupfs.Backup(ctx, w, []backupfs.Source{{Name: "workspace", Dir: src}}, opts)
	if err != nil {
		return u, err
	}
	if t.syncfs != nil {
		if err := t.syncfs.Sync(); err != nil {
			return u, err
		}
	}
	if res.SkippedCount > 0 || res.ChangedWhileReadCount > 0 {
		return u, fmt.Errorf("backup skipped %d entries (%v) and saw %d change while read (%v)", res.SkippedCount, res.Skipped, res.ChangedWhileReadCount, res.ChangedWhileRead)
	}
	u.note = fmt.Sprintf("%d files read", res.Read)
	if res.Changed {
		t.latest = coveNames[s]
	} else {
		u.note += ", nothing changed: not committed"
	}
	return u, nil
}

func (t *coveTool) restore(ctx context.Context, dst string) (u usage, err error) {
	defer t.measure(stepRestore, &u)()
	res, err := backupfs.Restore(ctx, t.repo, t.latest, []backupfs.Source{{Name: "workspace", Dir: dst}}, backupfs.RestoreOptions{Map: benchMap})
	if err != nil {
		return u, err
	}
	if res.FailedCount > 0 || len(res.Missing) > 0 {
		return u, fmt.Errorf("restore: %d entries failed (%v), missing trees %v", res.FailedCount, res.Failed, res.Missing)
	}
	u.note = fmt.Sprintf("%d files", res.Files)
	return u, nil
}

// measure starts measuring this process's CPU (and profiling, if asked)
// and returns the function that stops and records it in u.
func (t *coveTool) measure(s step, u *usage) func() {
	before := selfCPU()
	var prof, tr *os.File
	if t.profile != "" {
		base := filepath.Join(t.profile, fmt.Sprintf("cove-%d-%s", s, []string{"full", "incr", "incr-warm", "noop", "restore"}[s]))
		if f, err := os.Create(base + ".pprof"); err == nil && pprof.StartCPUProfile(f) == nil {
			prof = f
		} else if f != nil {
			f.Close()
		}
		// An execution trace too: what each goroutine waited on
		// (go tool trace).
		if f, err := os.Create(base + ".trace"); err == nil && trace.Start(f) == nil {
			tr = f
		} else if f != nil {
			f.Close()
		}
	}
	return func() {
		if prof != nil {
			pprof.StopCPUProfile()
			prof.Close()
		}
		if tr != nil {
			trace.Stop()
			tr.Close()
		}
		u.cpu = selfCPU() - before
	}
}

func selfCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
