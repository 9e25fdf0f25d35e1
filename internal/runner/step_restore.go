package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/covedev/cove/internal/atomicfile"
	"github.com/covedev/cove/internal/backupfs"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// restoreStep replaces the environment's content (workspace, upper
// directories, volumes) with a backup's (spec.restore), its containers
// stopped and file systems unmounted. Nothing is lost: the current
// content is moved aside (renamed beside itself, on the same file
// system) and only deleted once the restore succeeded; when it fails, it
// is put back and the environment does not start on half-restored
// content. A runner killed meanwhile finds restore.json in the
// environment's directory and puts the old content back (or finishes a
// restore that had succeeded) before anything else. It writes the
// content and lifecycle sections as well as its own: restored content is
// ready (no clone) and was created (no onCreate/postCreate commands
// again: they ran when the content was made, their effects are in it).
type restoreStep struct{ r *Runner }

// asideSuffix names a tree moved aside during a restore.
const asideSuffix = ".pre-restore"

// restoreRecord is restore.json: a restore under way.
type restoreRecord struct {
	Generation int64    `json:"generation"`
	Backup     string   `json:"backup"`
	Targets    []string `json:"targets"` // directories emptied for the restore
	Moved      []string `json:"moved"`   // of them, those whose content is aside
	Done       bool     `json:"done"`    // restored: the aside content may go
}

func restoreRecordPath(lay envdir.Layout) string { return filepath.Join(lay.Dir, "restore.json") }

func (s restoreStep) run(ctx context.Context, e *stepEnv) error {
	st, lay := e.st, e.lay
	// Planned: either spec.restore is due or the runner had no state for
	// the environment (restoreRequest); the state made since by the
	// prepare step keeps the latter in LostDisk.
	req := restoreRequestOf(e.env, st, true)
	if req == nil {
		return nil // carried out meanwhile (a runner killed after it)
	}
	if req != e.env.GetSpec().GetRestore() {
		st.Backup.LostDisk = true
	}
	if finished, err := recoverRestore(lay, req.GetGeneration()); err != nil {
		return err
	} else if finished {
		restored(st, lay, req, "")
		e.rep.sub(subContent, subReady, "") // restored counts as cloned
		return nil
	}
	report := reportFunc(e.rep)
	began := timestamppb.New(s.r.clock.Now())
	if req.GetBackupFirst() && st.Content.Ready {
		if _, err := s.r.takeBackup(ctx, e, "before-restore", false, report); err != nil && !errors.Is(err, errBackupsDisabled) {
			return s.failed(ctx, e, req, began, fmt.Sprintf("restore of backup %s not done: the backup before it failed (%v); the environment's content is unchanged", req.GetBackupId(), err), err)
		}
	}
	storage, key, err := s.r.backupAccess(ctx, e.id())
	if errors.Is(err, errBackupsDisabled) {
		err = errdefs.FailedPrecondition(usererr.New("cannot restore backup %s: backups are not enabled on the server", req.GetBackupId()))
		return s.failed(ctx, e, req, began, err.Error()+"; the environment's content is unchanged", err)
	}
	if err != nil {
		return err
	}
	defer clear(key)
	prog := &covev1.BackupProgress{Operation: "restore", State: &covev1.SubStatus{Phase: subInProgress, Message: req.GetBackupId()}, StartedAt: timestamppb.New(s.r.clock.Now())}
	st.Backup.setProgress(prog)
	report()
	rec, err := asideContent(lay, st, req)
	if err != nil {
		return err
	}
	job := &backupJob{Op: "restore", Storage: storage, Key: key, Name: req.GetBackupId(), Sources: restoreTargets(lay, st),
		Map: idMapOf(st), ServicesDir: lay.ServicesData()}
	run, err := s.r.runChild(ctx, job, "", func(p backupfs.Progress) {
		st.Backup.progress = &covev1.BackupProgress{Operation: "restore", State: prog.State, FilesDone: p.Files, BytesDone: p.Bytes, StartedAt: prog.StartedAt}
		report()
	})
	if err == nil && run.final.Error != "" {
		err = childError(run.final)
	}
	res := run.final.Restored
	if err == nil && res == nil {
		err = errors.New("the restore process gave no result")
	}
	if err == nil && res.FailedCount > 0 && len(rec.Moved) > 0 {
		// With content to go back to, a partial restore is not worth
		// starting on: the user keeps what they had.
		err = errdefs.FailedPrecondition(fmt.Errorf("%d files could not be restored (%s)", res.FailedCount, strings.Join(res.Failed, "; ")))
	}
	if err != nil {
		rerr := rollBack(lay, rec)
		if rerr != nil {
			// The aside content stays where it is, named in the log.
			s.r.log.Error("restore failed and the old content could not be put back", "env", e.id(), "err", rerr, "aside", rec.Moved)
			err = errors.Join(err, rerr)
		}
		msg := fmt.Sprintf("restore of backup %s failed, the environment's content is unchanged: %v", req.GetBackupId(), err)
		if rerr == nil && len(rec.Moved) > 0 && st.Content.Ready {
			return s.failed(ctx, e, req, prog.StartedAt, msg, err)
		}
		st.Backup.setProgress(&covev1.BackupProgress{Operation: "restore", StartedAt: prog.StartedAt, State: &covev1.SubStatus{Phase: subFailed, Message: msg}})
		if errdefs.CategoryOf(err) == errdefs.CategoryResourceExhausted {
			// A full disk does not heal by retrying: the user frees
			// space (or moves the environment), then starts it again.
			err = errdefs.FailedPrecondition(err)
		}
		return usererr.Wrap(err, "%s", msg)
	}
	rec.Done = true
	if err := writeRestoreRecord(lay, rec); err != nil {
		return err
	}
	if _, err := recoverRestore(lay, rec.Generation); err != nil {
		return err
	}
	msg := ""
	if res.FailedCount > 0 {
		msg = fmt.Sprintf("%d files could not be restored: %s", res.FailedCount, strings.Join(res.Failed, "; "))
	}
	st.Backup.setProgress(&covev1.BackupProgress{Operation: "restore", StartedAt: prog.StartedAt, FilesDone: res.Files, BytesDone: res.Bytes,
		State: &covev1.SubStatus{Phase: subReady, Message: msg}})
	restored(st, lay, req, msg)
	e.rep.sub(subContent, subReady, "") // restored counts as cloned: not PENDING on a runner that never cloned it
	// The restored content is what a backup requested meanwhile (a move
	// asks for one on the old runner) would hold.
	st.Backup.Generation = max(st.Backup.Generation, e.env.GetSpec().GetBackupGeneration())
	return nil
}

// failed ends a restore that did not happen while the environment keeps
// content of its own (REV-16): the request is carried out as FAILED
// (observed_restore_generation, the message saying the content was kept)
// and the plan goes on to start that content; retrying the same restore
// at every start would keep the environment from running at all.
// `cove env restore --backup` asks again. Without content of its own (a
// move, a lost disk) there is nothing to start: the error stands and the
// next start tries again. A runner shutting down (ctx done) tries again.
func (s restoreStep) failed(ctx context.Context, e *stepEnv, req *covev1.RestoreRequest, began *timestamppb.Timestamp, msg string, err error) error {
	st := e.st
	if !st.Content.Ready || ctx.Err() != nil {
		st.Backup.setProgress(&covev1.BackupProgress{Operation: "restore", StartedAt: began, State: &covev1.SubStatus{Phase: subFailed, Message: msg}})
		return usererr.Wrap(err, "%s", msg)
	}
	s.r.log.Error("restore not done; the environment starts on its current content", "env", e.id(), "backup", req.GetBackupId(), "err", err)
	st.Backup.setProgress(&covev1.BackupProgress{Operation: "restore", StartedAt: began,
		State: &covev1.SubStatus{Phase: subFailed, Message: msg + "; it starts on that content: `cove env restore --backup` tries again"}})
	st.Backup.RestoreGeneration = max(st.Backup.RestoreGeneration, req.GetGeneration())
	return nil
}

// restored records a restore that succeeded.
func restored(st *envState, lay envdir.Layout, req *covev1.RestoreRequest, _ string) {
	st.Content.Ready = true
	if st.Content.RepoName == "" {
		st.Content.RepoName = restoredRepoName(lay.Workspace())
	}
	st.Lifecycle.CreatedDone = true
	st.Backup.RestoreGeneration = req.GetGeneration()
	st.Backup.StopFailed = 0
	st.Backup.LostDisk = false
	// The next backup is incremental from the restored one (its files'
	// inodes differ: they are read again, their chunks are stored).
	st.Backup.Last, _ = protojson.Marshal(&covev1.Backup{Id: req.GetBackupId(), EnvironmentId: st.ID})
	st.Backup.Reported, st.Backup.Dirty = true, false
}

// restoredRepoName is the repository's directory in a restored
// workspace: its one directory ("" if there is not exactly one).
func restoredRepoName(ws string) string {
	ents, err := os.ReadDir(ws)
	if err != nil {
		return ""
	}
	name := ""
	for _, e := range ents {
		if e.IsDir() {
			if name != "" {
				return ""
			}
			name = e.Name()
		}
	}
	return name
}

// restoreTargets are the trees a restore writes: the environment's, and
// the Compose services' it knows of (the child restores those of others
// the backup holds into ServicesData).
func restoreTargets(lay envdir.Layout, st *envState) []backupfs.Source {
	ts := []backupfs.Source{
		{Name: "workspace", Dir: lay.Workspace()},
		{Name: "upper", Dir: lay.Upper(), Overlay: true},
		{Name: "volumes", Dir: lay.Volumes()},
	}
	if st.Image.Compose != nil {
		for _, s := range st.Image.Compose.Services {
			ts = append(ts, backupfs.Source{Name: "svc/" + s.Name + "/upper", Dir: lay.Service(s.Name).Upper(), Overlay: true})
		}
	}
	return ts
}

// asideContent moves the current content aside and leaves an empty
// directory for each target, recording both first.
func asideContent(lay envdir.Layout, st *envState, req *covev1.RestoreRequest) (*restoreRecord, error) {
	rec := &restoreRecord{Generation: req.GetGeneration(), Backup: req.GetBackupId()}
	targets := restoreTargets(lay, st)
	for _, t := range targets {
		rec.Targets = append(rec.Targets, t.Dir)
		if _, err := os.Lstat(t.Dir); err == nil {
			rec.Moved = append(rec.Moved, t.Dir)
		}
	}
	// The services' trees the child may make for a backup's services.
	for _, d := range serviceUppers(lay) {
		if !contains(rec.Targets, d) {
			rec.Targets, rec.Moved = append(rec.Targets, d), append(rec.Moved, d)
		}
	}
	if err := writeRestoreRecord(lay, rec); err != nil {
		return nil, err
	}
	owner := map[string]*syscall.Stat_t{}
	for _, d := range rec.Moved {
		var fi syscall.Stat_t
		if err := syscall.Lstat(d, &fi); err == nil {
			owner[d] = &fi
		}
		if err := os.Rename(d, d+asideSuffix); err != nil {
			return nil, errors.Join(fmt.Errorf("move the current content aside: %w", err), rollBack(lay, rec))
		}
	}
	for _, t := range targets {
		m := idMapOf(st)
		uid, gid, mode := int(m.HostUID), int(m.HostGID), uint32(0o755)
		if fi := owner[t.Dir]; fi != nil {
			uid, gid, mode = int(fi.Uid), int(fi.Gid), fi.Mode&0o7777
		}
		if err := mkdirEmpty(t.Dir, uid, gid, mode); err != nil {
			return nil, errors.Join(err, rollBack(lay, rec))
		}
	}
	return rec, nil
}

// serviceUppers lists the services' upper directories there are in the
// environment's directory (ServicesData/<service>/upper).
func serviceUppers(lay envdir.Layout) []string {
	ents, err := os.ReadDir(lay.ServicesData())
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		d := filepath.Join(lay.ServicesData(), e.Name(), "upper")
		if _, err := os.Lstat(d); err == nil {
			out = append(out, d)
		}
	}
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// mkdirEmpty makes dir (and its parents) with owner and mode set through
// a handle opened without following a symlink: a name that is not a real
// directory is refused, never followed.
func mkdirEmpty(dir string, uid, gid int, mode uint32) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return fmt.Errorf("restore target: %w", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("restore target: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("restore target %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return fmt.Errorf("restore target: %w", err)
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("restore target: %w", err)
	}
	return nil
}

func writeRestoreRecord(lay envdir.Layout, rec *restoreRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(restoreRecordPath(lay), b, 0o600); err != nil {
		return fmt.Errorf("record the restore: %w", err)
	}
	return nil
}

// rollBack removes what a restore wrote and puts the content it moved
// aside back, then forgets the restore.
func rollBack(lay envdir.Layout, rec *restoreRecord) error {
	var errs []error
	for _, d := range rec.Targets {
		if _, err := os.Lstat(d + asideSuffix); err != nil && contains(rec.Moved, d) {
			continue // never moved: the content is still in place
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove the partial restore %s: %w", d, err))
			continue
		}
		if contains(rec.Moved, d) {
			if err := os.Rename(d+asideSuffix, d); err != nil {
				errs = append(errs, fmt.Errorf("put the content back in %s: %w", d, err))
			}
		}
	}
	// A service tree the child made for a backup's service (restoreAll)
	// is in no record: every one there before the restore was recorded
	// (asideContent), so any other holds what the restore wrote, files
	// partly written under their own names (review S10-2).
	for _, d := range serviceUppers(lay) {
		if contains(rec.Targets, d) {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove the partial restore %s: %w", d, err))
		}
	}
	if len(errs) == 0 {
		if err := os.Remove(restoreRecordPath(lay)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// recoverRestore finishes what a restore killed with the runner left:
// the old content removed after a restore that succeeded (finished
// reports it when it was generation gen's), else put back.
func recoverRestore(lay envdir.Layout, gen int64) (finished bool, err error) {
	b, err := os.ReadFile(restoreRecordPath(lay))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var rec restoreRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return false, fmt.Errorf("restore record: %w", err)
	}
	if !rec.Done {
		return false, rollBack(lay, &rec)
	}
	for _, d := range rec.Moved {
		if err := os.RemoveAll(d + asideSuffix); err != nil {
			return false, fmt.Errorf("remove the content a restore replaced: %w", err)
		}
	}
	if err := os.Remove(restoreRecordPath(lay)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return rec.Generation == gen, nil
}
