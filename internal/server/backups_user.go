package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/store"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// The users' backup calls: the same ownership rules as GetEnvironment (a
// user sees and acts on their own environments only; others' are not
// found).

func (e *envService) ListBackups(ctx context.Context, req *connect.Request[covev1.ListBackupsRequest]) (*connect.Response[covev1.ListBackupsResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	env, err := e.s.lookup(ctx, u, req.Msg.GetEnvironmentId())
	if err != nil {
		return nil, err
	}
	bs, err := e.s.store.ListBackups(ctx, env.Id)
	if err != nil {
		return nil, err
	}
	out := &covev1.ListBackupsResponse{}
	for _, b := range bs {
		p := backupProto(b)
		if b.Trigger == triggerSalvage {
			p.Note = e.s.salvageNote(ctx, b) // salvage.go
		}
		out.Backups = append(out.Backups, p)
	}
	return connect.NewResponse(out), nil
}

func (e *envService) BackupEnvironment(ctx context.Context, req *connect.Request[covev1.BackupEnvironmentRequest]) (*connect.Response[covev1.BackupEnvironmentResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	env, err := e.s.lookup(ctx, u, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	if !e.s.backupsEnabled() {
		return nil, errBackupsDisabled
	}
	if err := e.s.runnerReachable(ctx, env, "take a backup"); err != nil {
		return nil, err
	}
	env, err = e.s.store.UpdateEnvironment(ctx, env.Id, func(env *covev1.Environment) error {
		if err := notDeleted(env); err != nil {
			return err
		}
		env.Spec.BackupGeneration++
		env.Spec.SpecVersion++
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.s.log.Info("backup requested", "env", env.Id, "user", u.Name, "generation", env.Spec.BackupGeneration)
	return connect.NewResponse(&covev1.BackupEnvironmentResponse{Environment: env}), nil
}

func notDeleted(env *covev1.Environment) error {
	if env.GetSpec().GetDesiredPhase() == phaseDeleted || env.GetStatus().GetPhase() == phaseDeleted {
		return usererr.New("environment %q is being deleted", env.GetMetadata().GetName())
	}
	return nil
}

// runnerReachable refuses what needs the environment's runner (it holds the
// content) while there is none, or it is not connected.
func (s *Server) runnerReachable(ctx context.Context, env *covev1.Environment, what string) error {
	id := env.GetMetadata().GetRunnerId()
	if id == "" {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("environment %q is on no runner yet: nothing to %s", env.GetMetadata().GetName(), what))
	}
	rn, err := s.store.GetRunner(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("environment %q's runner was removed", env.GetMetadata().GetName()))
	}
	if err != nil {
		return err
	}
	if rn.Phase != covev1.RunnerPhase_RUNNER_PHASE_ACTIVE {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"cannot %s: environment %q's runner %q is not connected (last seen %s); its content is there, so wait for it to return, or move the environment (`cove env start %s --runner OTHER`) to start it from its last backup",
			what, env.GetMetadata().GetName(), rn.Name, rn.LastSeen.UTC().Format(time.RFC3339), env.GetMetadata().GetName()))
	}
	return nil
}

// backupOf finds backup id of env ("": its latest). A backup of another
// environment is not found, whoever owns it.
func (s *Server) backupOf(ctx context.Context, env *covev1.Environment, id string) (store.Backup, error) {
	bs, err := s.store.ListBackups(ctx, env.Id)
	if err != nil {
		return store.Backup{}, err
	}
	name := env.GetMetadata().GetName()
	if id == "" {
		if len(bs) == 0 {
			return store.Backup{}, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("environment %q has no backup yet (take one with `cove env backup %s`)", name, name))
		}
		// The latest, or the one restored since (REV-15); never one
		// without files unless named (REV-14).
		b, ok := restoreSource(env, bs)
		if !ok {
			return store.Backup{}, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("environment %q has only backups that hold no files; name one with --backup if you mean it (see `cove env backups %s`)", name, name))
		}
		return b, nil
	}
	for _, b := range bs {
		if b.ID == id {
			return b, nil
		}
	}
	return store.Backup{}, connect.NewError(connect.CodeNotFound, fmt.Errorf("environment %q has no backup %q (see `cove env backups %s`)", name, id, name))
}

func (e *envService) RestoreEnvironment(ctx context.Context, req *connect.Request[covev1.RestoreEnvironmentRequest]) (*connect.Response[covev1.RestoreEnvironmentResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	env, err := e.s.lookup(ctx, u, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	if !e.s.backupsEnabled() {
		return nil, errBackupsDisabled
	}
	b, err := e.s.backupOf(ctx, env, req.Msg.GetBackupId())
	if err != nil {
		return nil, err
	}
	e.s.quotaMu.Lock()
	defer e.s.quotaMu.Unlock()
	if !occupies(env) {
		if err := e.s.checkUserCapacity(ctx, u, env.Id, true); err != nil {
			return nil, err
		}
	}
	env, err = e.s.store.UpdateEnvironment(ctx, env.Id, func(env *covev1.Environment) error {
		if err := notDeleted(env); err != nil {
			return err
		}
		// The current content is backed up first, so the rollback can be
		// undone (the runner skips that when it holds no content).
		env.Spec.Restore = &covev1.RestoreRequest{BackupId: b.ID, Generation: restoreGeneration(env) + 1, BackupFirst: true}
		if env.Status != nil {
			// The user chose what runs now: a salvage's warning has
			// been read (salvage.go; the record stays listed).
			env.Status.Warnings = slices.DeleteFunc(env.Status.Warnings, func(w string) bool { return strings.HasPrefix(w, salvagedWarningPrefix) })
		}
		env.Spec.DesiredPhase = phaseRunning
		env.Metadata.RunStartedAt = nil // a new run: its auto-stop clock starts when it runs again
		env.Spec.StopReason = ""
		env.Spec.SpecVersion++
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := e.s.store.DeleteMove(ctx, env.Id); err != nil {
		return nil, err
	}
	e.s.log.Info("restore requested", "env", env.Id, "user", u.Name, "backup", b.ID)
	return connect.NewResponse(&covev1.RestoreEnvironmentResponse{Environment: env}), nil
}

// restoreGeneration is the last restore generation asked for or carried
// out, so the next one is always newer than both.
func restoreGeneration(env *covev1.Environment) int64 {
	return max(env.GetSpec().GetRestore().GetGeneration(), env.GetStatus().GetObservedRestoreGeneration())
}

// checkCreateBackupFields refuses the backup fields of a spec sent at
// create: a restore there would name a backup the server never checked
// belongs to the environment (another user's, say).
func checkCreateBackupFields(spec *covev1.EnvironmentSpec) error {
	if spec.GetRestore() != nil {
		return invalidField("spec.restore", "is set by the server (`cove env restore`, moves); leave it empty")
	}
	if spec.GetSalvage() {
		return invalidField("spec.salvage", "is set by the server on the copy a runner an environment left is sent; leave it false")
	}
	if g := spec.GetBackupGeneration(); g != 0 {
		return invalidField("spec.backupGeneration", "is set by the server (`cove env backup`); leave it 0, not %d", g)
	}
	return nil
}
