package runner

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/covedev/cove/internal/backupfs"
	"github.com/covedev/cove/internal/backuprepo"
	"github.com/covedev/cove/internal/blob"
	"github.com/covedev/cove/internal/blob/localblob"
	"github.com/covedev/cove/internal/blob/s3blob"
	"github.com/covedev/cove/internal/errdefs"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// A backup or a restore runs in a child process, `cove internal-backup`
// (BackupChild), in the runner's work cgroup "backup" (backup.go): the
// walk, chunking, compression, encryption and upload use no more CPU,
// memory and disk bandwidth than that cgroup allows.
//
// The protocol, JSON lines: the runner writes one backupJob on the
// child's stdin (the organization key travels only there: never on a
// command line, in a file or in a log), the child opens the storage (and
// the previous backup) and answers {"ready":true}; the runner freezes the
// environment and writes "walk\n"; the child walks (or restores), with
// {"progress":…} lines now and then, and ends with one {"walked":…}
// line (backup) or {"restored":…} line (restore), or {"error":…,
// "category":…}. The runner thaws when the walk ends, whatever the way.

// backupJob is what the runner asks of the child.
type backupJob struct {
	Op       string          `json:"op"` // "backup" or "restore"
	Storage  json.RawMessage `json:"storage"`
	Key      []byte          `json:"key"`  // the organization's backup key
	Name     string          `json:"name"` // the backup to write or read
	Trigger  string          `json:"trigger,omitempty"`
	Previous string          `json:"previous,omitempty"`
	Time     time.Time       `json:"time"`
	Sources  []backupfs.Source
	Map      backupfs.IDMap
	// ServicesDir (restore): Compose services' trees in the backup
	// ("svc/<name>/upper") that no source names are restored into
	// ServicesDir/<name>/upper, made for them.
	ServicesDir string `json:"servicesDir,omitempty"`
}

// jobEvent is one line the child writes.
type jobEvent struct {
	Ready    bool                   `json:"ready,omitempty"`
	Progress *backupfs.Progress     `json:"progress,omitempty"`
	Walked   *backupfs.BackupResult `json:"walked,omitempty"`
	Restored *restoredResult        `json:"restored,omitempty"`
	Error    string                 `json:"error,omitempty"`
	Category string                 `json:"category,omitempty"`
	// Swept: the commit was refused because garbage collection swept the
	// storage meanwhile (backuprepo.ErrSwept): take the backup again,
	// under a new name.
	Swept bool `json:"swept,omitempty"`
}

// restoredResult is backupfs.RestoreResult as JSON (its FileErrors hold
// errors).
type restoredResult struct {
	Files, Bytes int64
	Failed       []string // "path: why"
	FailedCount  int64
	Ignored      []string
	Missing      []string
	Overflow     int64
}

// maxJobBytes bounds the job line the child reads.
const maxJobBytes = 1 << 20

// BackupChild is the child's side (`cove internal-backup`): it reads a
// job on in, does it and writes its events on out. A failure is written
// as an error event; the returned error is only for what could not be
// written.
func BackupChild(ctx context.Context, in io.Reader, out io.Writer, log *slog.Logger) error {
	enc := &eventWriter{enc: json.NewEncoder(out)}
	err := backupChild(ctx, bufio.NewReaderSize(io.LimitReader(in, maxJobBytes+16), 4096), enc, log)
	if err != nil {
		cat := errdefs.CategoryOf(err)
		return enc.write(jobEvent{Error: err.Error(), Category: cat.String(), Swept: errors.Is(err, backuprepo.ErrSwept)})
	}
	return nil
}

type eventWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (w *eventWriter) write(e jobEvent) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.enc.Encode(e)
}

func backupChild(ctx context.Context, in *bufio.Reader, out *eventWriter, log *slog.Logger) error {
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read the job: %w", err)
	}
	var job backupJob
	if err := json.Unmarshal(line, &job); err != nil {
		return fmt.Errorf("read the job: %w", err)
	}
	key, err := backuprepo.ParseKey(job.Key)
	clear(job.Key)
	if err != nil {
		return err
	}
	store, err := openStorage(job.Storage, key.ID(), log)
	if err != nil {
		return err
	}
	repo := backuprepo.New(store, key, log)
	progress := func(p backupfs.Progress) { _ = out.write(jobEvent{Progress: &p}) }
	switch job.Op {
	case "backup":
		var prev *backuprepo.ManifestReader
		if job.Previous != "" {
			if prev, err = repo.OpenManifest(ctx, job.Previous); err != nil {
				// Gone (retention) or unreadable: a full backup instead.
				log.Warn("previous backup unreadable; taking a full backup", "previous", job.Previous, "err", err)
				prev, job.Previous = nil, ""
			}
		}
		w, err := repo.NewWriter(ctx, job.Name, backuprepo.Metadata{Time: job.Time, Trigger: job.Trigger, Previous: job.Previous})
		if err != nil {
			return err
		}
		if err := waitWalk(ctx, in, out); err != nil {
			return err
		}
		res, err := backupfs.Backup(ctx, w, job.Sources, backupfs.BackupOptions{Map: job.Map, Previous: prev, Progress: progress, Log: log})
		if err != nil {
			return err
		}
		return out.write(jobEvent{Walked: &res})
	case "restore":
		if err := waitWalk(ctx, in, out); err != nil {
			return err
		}
		res, err := restoreAll(ctx, repo, &job, progress, log)
		if err != nil {
			return err
		}
		return out.write(jobEvent{Restored: res})
	}
	return errdefs.InvalidArgument(fmt.Errorf("unknown operation %q", job.Op))
}

// waitWalk says the child is ready and waits for the runner's go.
func waitWalk(ctx context.Context, in *bufio.Reader, out *eventWriter) error {
	if err := out.write(jobEvent{Ready: true}); err != nil {
		return err
	}
	line, err := in.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "walk" {
		return errdefs.Canceled(fmt.Errorf("the runner did not start the walk (%v)", err))
	}
	return ctx.Err()
}

var serviceTreeRE = regexp.MustCompile(`^svc/([a-zA-Z0-9][a-zA-Z0-9_.-]{0,62})/upper$`)

// restoreAll restores the job's sources, then the Compose services'
// trees the backup holds that no source named (an environment moved to a
// runner that has not read its configuration yet).
func restoreAll(ctx context.Context, repo *backuprepo.Repo, job *backupJob, progress func(backupfs.Progress), log *slog.Logger) (*restoredResult, error) {
	opts := backupfs.RestoreOptions{Map: job.Map, Progress: progress, Log: log}
	res, err := backupfs.Restore(ctx, repo, job.Name, job.Sources, opts)
	if err != nil {
		return nil, err
	}
	out := &restoredResult{}
	add := func(r backupfs.RestoreResult) {
		out.Files += r.Files
		out.Bytes += r.Bytes
		out.FailedCount += r.FailedCount
		out.Overflow += r.Overflow
		out.Missing = append(out.Missing, r.Missing...)
		for _, f := range r.Failed {
			if len(out.Failed) < backupfs.MaxListed {
				out.Failed = append(out.Failed, f.Error())
			}
		}
	}
	add(res)
	var svc []string
	for _, name := range res.Ignored {
		if job.ServicesDir != "" && serviceTreeRE.MatchString(name) {
			svc = append(svc, name)
		} else {
			out.Ignored = append(out.Ignored, name)
		}
	}
	sort.Strings(svc)
	for _, name := range svc {
		dir := path.Join(job.ServicesDir, serviceTreeRE.FindStringSubmatch(name)[1], "upper")
		if err := mkdirEmpty(dir, int(job.Map.HostUID), int(job.Map.HostGID), 0o755); err != nil {
			return nil, err
		}
		r, err := backupfs.Restore(ctx, repo, job.Name, []backupfs.Source{{Name: name, Dir: dir, Overlay: true}}, opts)
		if err != nil {
			return nil, err
		}
		add(r)
	}
	return out, nil
}

// openStorage opens the blob store a BackupStorage (protojson) names, to
// store objects of the backup key whose id is keyID.
func openStorage(raw json.RawMessage, keyID string, log *slog.Logger) (blob.Store, error) {
	var s covev1.BackupStorage
	if err := protojson.Unmarshal(raw, &s); err != nil {
		return nil, errdefs.InvalidArgument(fmt.Errorf("backup storage: %w", err))
	}
	switch s.GetKind() {
	case "dir":
		return localblob.New(s.GetDir(), log, localblob.BatchedSync(keyID)) // backuprepo syncs before each manifest
	case "s3":
		return s3blob.New(s3blob.Config{Endpoint: s.GetEndpoint(), Region: s.GetRegion(), Bucket: s.GetBucket(), Prefix: s.GetPrefix(),
			AccessKeyID: s.GetAccessKeyId(), SecretAccessKey: s.GetSecretAccessKey(), SessionToken: s.GetSessionToken(),
			PathStyle: s.GetPathStyle(), Logger: log})
	}
	return nil, errdefs.InvalidArgument(fmt.Errorf("backup storage of unknown kind %q", s.GetKind()))
}

// categoryNamed is the category whose String is name (Unknown if none).
func categoryNamed(name string) errdefs.Category {
	for c := errdefs.Category(0); c < 32; c++ {
		if c.String() == name && name != "unknown" {
			return c
		}
	}
	return errdefs.CategoryUnknown
}

// childError is an error event as an error of its category.
func childError(e jobEvent) error {
	return errdefs.WithCategory(errors.New(e.Error), categoryNamed(e.Category))
}
