package backupgc

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Policy says which backups of an environment are kept, like restic's
// "forget": the last KeepLast, the newest of each hour for HourlyFor, the
// newest of each day (UTC) for DailyFor. Whatever the policy, the newest
// backup of an environment is kept, and so is a backup a pending restore
// names. Backups are self-contained (an incremental backup's manifest lists
// every chunk of every file; "previous" only spared reading unchanged
// files), so deleting one never breaks another.
type Policy struct {
	KeepLast  int
	HourlyFor time.Duration
	DailyFor  time.Duration
	// DeletedGrace: the backups of a deleted environment are all removed
	// this long after its deletion.
	DeletedGrace time.Duration
}

// DefaultPolicy is the policy of the server's defaults.
func DefaultPolicy() Policy {
	return Policy{KeepLast: 10, HourlyFor: 24 * time.Hour, DailyFor: 14 * 24 * time.Hour, DeletedGrace: 7 * 24 * time.Hour}
}

// Validate checks the policy's values.
func (p Policy) Validate() error {
	if p.KeepLast < 1 {
		return fmt.Errorf("backup retention: keep at least the last backup (keep-last %d)", p.KeepLast)
	}
	if p.HourlyFor < 0 || p.DailyFor < 0 || p.DeletedGrace < 0 {
		return fmt.Errorf("backup retention: durations must not be negative")
	}
	return nil
}

// BackupInfo is what retention needs of a backup.
type BackupInfo struct {
	ID            string
	EnvironmentID string
	Time          time.Time
	// Salvage: the copy a runner held when the environment had moved on
	// (work in no other backup, not restored unless the user names it):
	// kept while the environment exists.
	Salvage bool
}

// EnvInfo is what retention needs of an environment.
type EnvInfo struct {
	// Deleted: the environment is deleted (or its record is gone) since
	// DeletedAt. Zero: unknown; Job then counts from the first run that
	// saw it deleted (Plan alone: the grace has not started).
	Deleted   bool
	DeletedAt time.Time
	// PendingRestore is the backup a restore not yet carried out names.
	PendingRestore string
}

// Decision is what retention decided for one backup, and why.
type Decision struct {
	Backup BackupInfo
	Keep   bool
	Reason string
}

// Plan decides which of one environment's backups to keep at now.
func (p Policy) Plan(now time.Time, env EnvInfo, backups []BackupInfo) []Decision {
	bs := slices.Clone(backups)
	slices.SortFunc(bs, func(a, b BackupInfo) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
	out := make([]Decision, len(bs))
	if env.Deleted && !env.DeletedAt.IsZero() && now.Sub(env.DeletedAt) >= p.DeletedGrace {
		why := fmt.Sprintf("environment deleted at %s, more than %v ago", env.DeletedAt.UTC().Format(time.RFC3339), p.DeletedGrace)
		for i, b := range bs {
			out[i] = Decision{Backup: b, Reason: why}
		}
		return out
	}
	hours, days := map[int64]bool{}, map[int64]bool{}
	for i, b := range bs {
		d := Decision{Backup: b, Keep: true}
		hour, day := b.Time.Unix()/3600, b.Time.UTC().Truncate(24*time.Hour).Unix()
		switch {
		case i == 0:
			d.Reason = "newest"
		case b.ID == env.PendingRestore:
			d.Reason = "a restore is pending"
		case b.Salvage:
			d.Reason = "a salvaged copy (kept while the environment exists)"
		case !b.Time.Before(now):
			d.Reason = "newer than now (clock skew)"
		case i < p.KeepLast:
			d.Reason = fmt.Sprintf("one of the last %d", p.KeepLast)
		case now.Sub(b.Time) < p.HourlyFor && !hours[hour]:
			d.Reason = "newest of its hour"
		case now.Sub(b.Time) < p.DailyFor && !days[day]:
			d.Reason = "newest of its day"
		default:
			d.Keep, d.Reason = false, "past the retention policy"
		}
		// Buckets are taken by the newest backup in them, kept or not
		// for another reason: "the newest per hour" is that one.
		hours[hour], days[day] = true, true
		out[i] = d
	}
	return out
}
