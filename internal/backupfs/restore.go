package backupfs

import (
	"context"
	"errors"

	"github.com/covedev/cove/internal/backuprepo"
)

// Restore writes backup name into targets (matched by Name). Each target
// Dir must exist and be empty. An error is returned when nothing sensible
// could be done (manifest unreadable, disk full, a target not empty);
// otherwise the result lists the entries that failed, with the rest
// restored.
func Restore(ctx context.Context, repo *backuprepo.Repo, name string, targets []Source, opts RestoreOptions) (RestoreResult, error) {
	return RestoreResult{}, errors.New("backupfs: not implemented yet")
}
