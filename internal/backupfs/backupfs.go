// Package backupfs turns an environment's trees (workspace, overlay upper
// directory, volumes, services' upper directories) into a backup of
// internal/backuprepo, and a backup back into trees (issue 13).
//
// It runs as root on the host over trees an environment controls, so
// every tree is hostile: the walk never follows a symlink nor leaves a
// source (confine.Walk: everything through descriptors, a name swapped for
// a symlink between listing and opening is not read), and a restore
// creates every entry through the descriptor of a directory it created
// itself, never resolving a path through something it restored (a
// manifest's symlink "a" -> "/" followed by "a/etc/passwd" writes nothing
// outside the target).
//
// Ownership is stored as seen inside the environment (IDMap), so a backup
// restores into any uid range. A v3 file capability (security.capability)
// names a host uid (its rootid): it is mapped like an owner. Overlay
// markers become manifest semantics (whiteouts, opaque directories), other
// trusted.* attributes and security labels (security.* but the
// capability) are the host's, not stored and never restored.
package backupfs

import (
	"log/slog"

	"github.com/covedev/cove/internal/backuprepo"
)

// Source is one tree of an environment, a directory on the host.
type Source struct {
	// Name is the tree's top-level path in the backup: "workspace",
	// "upper", "volumes", "svc/<service>/upper", … A clean relative path
	// without "..". No name may be below another (no "svc" with
	// "svc/db/upper"); parents of a nested name are recorded as plain
	// directories.
	Name string
	// Dir is the host path of the tree's root, a directory the runner laid
	// out (trusted up to and including its last component, which must not
	// be a symlink).
	Dir string
	// Overlay marks an overlayfs upper directory: a 0/0 character device
	// (or a file with trusted.overlay.whiteout) is a whiteout,
	// trusted.overlay.opaque=y an opaque directory.
	Overlay bool
}

// OverflowID is the id inside an environment of files whose host owner is
// outside its range (the kernel's overflow uid/gid).
const OverflowID = 65534

// IDMap maps host ids to ids as seen inside the environment: inside = host
// - Host{UID,GID} for host ids in [Host, Host+Size); anything else is owned
// by OverflowID inside (and counted). A restore maps back: host = inside +
// Host{UID,GID} for inside ids below Size; an inside id at or above Size
// (a backup from a larger range, or a hostile manifest) becomes OverflowID
// inside, which is host Host+OverflowID when the range holds it, else the
// host's own 65534 (nobody): a restore never creates a file owned by a
// host id in another range.
type IDMap struct{ HostUID, HostGID, Size uint32 }

// Progress is how much was read (backup) or written (restore) so far.
type Progress struct{ Files, Bytes int64 }

// BackupOptions tune Backup.
type BackupOptions struct {
	Map IDMap
	// Previous is the previous backup of this environment (incremental:
	// unchanged files reuse its chunks without being read, and Changed
	// compares with it), nil for a full backup. Backup reads it to its end.
	Previous *backuprepo.ManifestReader
	// Progress is called now and then (at most about 4 times a second, and
	// once at the end); it may be nil.
	Progress func(Progress)
	Log      *slog.Logger
}

// MaxListed bounds the paths a result lists in each of its lists; the
// counts say how many there were in all.
const MaxListed = 100

// BackupResult is what Backup did.
type BackupResult struct {
	// Summary is Commit's (zero when not committed).
	Summary backuprepo.Summary
	// Changed reports that something differs from Previous: content,
	// metadata, an entry added or removed, a whiteout (always true without
	// a Previous). When false nothing was committed.
	Changed bool
	// Skipped lists entries not backed up, "path: socket" (sockets, fifos,
	// devices other than whiteouts, paths too long, attributes that cannot
	// be kept), at most MaxListed; SkippedCount counts them all.
	Skipped      []string
	SkippedCount int64
	// ChangedWhileRead lists files whose size or times changed while they
	// were read, twice in a row: stored as read the second time (possibly
	// torn), at most MaxListed; ChangedWhileReadCount counts them all.
	ChangedWhileRead      []string
	ChangedWhileReadCount int64
	// Overflow counts entries whose owner (uid or gid) or capability root
	// was outside the map.
	Overflow int64
	Files    int64 // regular files in the backup
	Bytes    int64 // their content
	Read     int64 // files read (not reused from Previous)
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	Map IDMap
	// Progress is called now and then (at most about 4 times a second, and
	// once at the end), never twice at once; it may be nil.
	Progress func(Progress)
	Log      *slog.Logger
	// Workers is how many chunks are fetched at once (0:
	// DefaultRestoreWorkers; at most 64); they are opened and written on
	// as many goroutines as CPUs.
	Workers int
}

// FileError is a path that could not be restored and why.
type FileError struct {
	Path string
	Err  error
}

func (e FileError) Error() string { return e.Path + ": " + e.Err.Error() }

// RestoreResult is what Restore did.
type RestoreResult struct {
	Files, Bytes int64
	// Failed lists entries that could not be restored (missing or corrupt
	// chunk, an entry below something that is not a directory, a hard
	// link to nothing restored, …), at most MaxListed; FailedCount counts
	// them all. The rest was restored. A file that failed is not left
	// under its name.
	Failed      []FileError
	FailedCount int64
	// Ignored lists top-level trees in the backup that no target asked for.
	Ignored []string
	// Missing lists targets the backup holds no tree for (left empty).
	Missing []string
	// Overflow counts entries whose inside owner was outside the new range.
	Overflow int64
}
