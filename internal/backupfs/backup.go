package backupfs

import (
	"context"
	"errors"

	"github.com/covedev/cove/internal/backuprepo"
)

// Backup walks sources (each under its Name; they are taken in backup path
// order whatever the order given) into w. Every tree is walked; w is
// committed when something changed or there is no Previous. With a
// Previous and nothing different, Backup returns Changed=false without
// committing (the caller reports "skipped: nothing changed" and may drop
// w).
func Backup(ctx context.Context, w *backuprepo.Writer, sources []Source, opts BackupOptions) (BackupResult, error) {
	return BackupResult{}, errors.New("backupfs: not implemented yet")
}
