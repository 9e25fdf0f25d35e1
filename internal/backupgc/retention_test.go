package backupgc

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestRetentionPlan(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 30, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	// every returns backups taken every step, from start ago, n of them.
	every := func(step, start time.Duration, n int) []BackupInfo {
		var out []BackupInfo
		for i := range n {
			at := ago(start + time.Duration(i)*step)
			out = append(out, BackupInfo{ID: fmt.Sprintf("b%03d", i), EnvironmentID: "e", Time: at})
		}
		return out
	}
	policy := Policy{KeepLast: 3, HourlyFor: 6 * time.Hour, DailyFor: 3 * 24 * time.Hour, DeletedGrace: 7 * 24 * time.Hour}
	tests := []struct {
		name    string
		policy  Policy
		env     EnvInfo
		backups []BackupInfo
		keep    []string
	}{
		{"nothing", policy, EnvInfo{}, nil, nil},
		{"one old backup is the newest", policy, EnvInfo{}, every(time.Hour, 100*24*time.Hour, 1), []string{"b000"}},
		{"last N of a burst", policy, EnvInfo{}, every(time.Minute, 10*24*time.Hour, 6), []string{"b000", "b001", "b002"}},
		// Every 10 minutes from 12:30 back to 03:40: the last 3, then the
		// newest of each hour within 6 h (11:50, 10:50, … 06:50; the 12:00
		// hour is b000's); the day is b000's too.
		{"hourly", policy, EnvInfo{}, every(10*time.Minute, 0, 54),
			[]string{"b000", "b001", "b002", "b004", "b010", "b016", "b022", "b028", "b034"}},
		{"daily for D days", Policy{KeepLast: 1, DailyFor: 3 * 24 * time.Hour}, EnvInfo{}, every(12*time.Hour, 13*time.Hour, 10),
			// Every 12 h from Dec 2 23:30 back: the 23:30 ones are the newest of
			// their days, within 3 days down to Nov 30 (b004, 61 h ago).
			[]string{"b000", "b002", "b004"}},
		{"pending restore kept", Policy{KeepLast: 1}, EnvInfo{PendingRestore: "b004"}, every(time.Hour, time.Hour, 6), []string{"b000", "b004"}},
		{"salvage kept while the environment exists", Policy{KeepLast: 1}, EnvInfo{},
			append(every(time.Hour, time.Hour, 3), BackupInfo{ID: "s", EnvironmentID: "e", Time: ago(30 * 24 * time.Hour), Salvage: true}), []string{"b000", "s"}},
		{"salvage goes with its deleted environment", policy, EnvInfo{Deleted: true, DeletedAt: ago(7 * 24 * time.Hour)},
			[]BackupInfo{{ID: "s", EnvironmentID: "e", Time: ago(time.Hour), Salvage: true}}, nil},
		{"future backup kept", Policy{KeepLast: 1}, EnvInfo{}, append(every(time.Hour, time.Hour, 3), BackupInfo{ID: "z", Time: now.Add(time.Hour)}), []string{"z"}},
		{"deleted within the grace: policy as usual", policy, EnvInfo{Deleted: true, DeletedAt: ago(6 * 24 * time.Hour)}, every(24*time.Hour, 7*24*time.Hour, 5), []string{"b000", "b001", "b002"}},
		{"deleted past the grace: all go", policy, EnvInfo{Deleted: true, DeletedAt: ago(7 * 24 * time.Hour), PendingRestore: "b000"}, every(time.Hour, 8*24*time.Hour, 5), nil},
		{"deleted at an unknown time: grace not started", policy, EnvInfo{Deleted: true}, every(time.Hour, 80*24*time.Hour, 5), []string{"b000", "b001", "b002"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var keep []string
			for _, d := range tc.policy.Plan(now, tc.env, tc.backups) {
				if d.Reason == "" {
					t.Errorf("%s: no reason given", d.Backup.ID)
				}
				if d.Keep {
					keep = append(keep, d.Backup.ID)
				}
			}
			slices.Sort(keep)
			if !slices.Equal(keep, tc.keep) {
				t.Errorf("kept %v, want %v", keep, tc.keep)
			}
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []Policy{{KeepLast: 0}, {KeepLast: 1, HourlyFor: -1}} {
		if p.Validate() == nil {
			t.Errorf("%+v accepted", p)
		}
	}
}
