package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
)

// TestReportBackupRefusesHostileValues: a runner reporting a backup with a
// hostile or malformed field is refused and nothing is recorded; a valid
// report is recorded once, however often it is retried.
func TestReportBackupRefusesHostileValues(t *testing.T) {
	w := newBackupWorld(t, nil)
	env := w.running(t, w.alice, "work")
	other := w.running(t, w.bob, "theirs")
	if other.GetMetadata().GetRunnerId() != w.id2 {
		t.Fatalf("bob's environment is on %s, want r2", other.GetMetadata().GetRunnerId())
	}
	long := strings.Repeat("a", 4<<10+1)
	many := make([]string, 101)
	for i := range many {
		many[i] = "/run/s"
	}
	cases := []struct {
		name string
		edit func(b *covev1.Backup)
		want connect.Code
	}{
		{"id without the environment's prefix", func(b *covev1.Backup) { b.Id = "b1" }, connect.CodeInvalidArgument},
		{"id of another environment", func(b *covev1.Backup) { b.Id = other.Id + "/b1" }, connect.CodeInvalidArgument},
		{"id escaping with ..", func(b *covev1.Backup) { b.Id = env.Id + "/../../chunks/aa" }, connect.CodeInvalidArgument},
		{"id with an escape sequence", func(b *covev1.Backup) { b.Id = env.Id + "/\x1b[2Jx" }, connect.CodeInvalidArgument},
		{"id too long", func(b *covev1.Backup) { b.Id = env.Id + "/" + strings.Repeat("x", 300) }, connect.CodeInvalidArgument},
		{"empty segment", func(b *covev1.Backup) { b.Id = env.Id + "//b" }, connect.CodeInvalidArgument},
		{"previous escaping", func(b *covev1.Backup) { b.Previous = "../x" }, connect.CodeInvalidArgument},
		{"environment id of another runner's", func(b *covev1.Backup) { b.EnvironmentId = other.Id }, connect.CodeNotFound},
		{"negative files", func(b *covev1.Backup) { b.Files = -1 }, connect.CodeInvalidArgument},
		{"negative bytes new", func(b *covev1.Backup) { b.BytesNew = -5 }, connect.CodeInvalidArgument},
		{"negative frozen", func(b *covev1.Backup) { b.FrozenMs = -1 }, connect.CodeInvalidArgument},
		{"unknown trigger", func(b *covev1.Backup) { b.Trigger = "cron\x1b" }, connect.CodeInvalidArgument},
		{"no time", func(b *covev1.Backup) { b.Time = nil }, connect.CodeInvalidArgument},
		{"another runner's id", func(b *covev1.Backup) { b.RunnerId = w.id2 }, connect.CodeInvalidArgument},
		{"101 skipped paths", func(b *covev1.Backup) { b.Skipped = many }, connect.CodeInvalidArgument},
		{"a skipped path over 4 KiB", func(b *covev1.Backup) { b.Skipped = []string{long} }, connect.CodeInvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := w.backup(env, 1, "stop")
			c.edit(b)
			err := w.report(w.r1, b)
			if code(err) != c.want {
				t.Fatalf("report: %v; want %v", err, c.want)
			}
			for _, e := range []*covev1.Environment{env, other} {
				owner := w.alice
				if e == other {
					owner = w.bob
				}
				if got, err := w.list(t, owner, e.Id); err != nil || len(got) != 0 {
					t.Fatalf("after a refused report %s lists %v (%v); want nothing", e.GetMetadata().GetName(), got, err)
				}
			}
		})
	}
	// Another runner cannot report for r1's environment.
	if err := w.report(w.r2, w.backup(env, 1, "stop")); code(err) != connect.CodeNotFound {
		t.Fatalf("r2 reporting for r1's environment: %v, want NotFound", err)
	}

	// A valid report, retried (the answer was lost): recorded once. Its
	// skipped paths lose control characters.
	b := w.backup(env, 1, "stop")
	b.Skipped = []string{"/run/x\x1b]0;pwned\x07.sock"}
	b.RunnerId = w.id1
	for range 2 {
		if err := w.report(w.r1, proto.Clone(b).(*covev1.Backup)); err != nil {
			t.Fatalf("valid report: %v", err)
		}
	}
	got, err := w.list(t, w.alice, env.Id)
	if err != nil || len(got) != 1 || got[0].Id != b.Id || got[0].RunnerId != w.id1 || got[0].Files != 3 || got[0].BytesNew != 100 {
		t.Fatalf("recorded: %v, %v", got, err)
	}
	if s := got[0].GetSkipped(); len(s) != 1 || strings.ContainsAny(s[0], "\x1b\x07") || !strings.HasPrefix(s[0], "/run/x") {
		t.Fatalf("skipped paths: %q", s)
	}
	if last := w.get(t, w.alice, env.Id).GetStatus().GetLastBackup(); last.GetId() != b.Id {
		t.Fatalf("status.lastBackup = %v, want %s", last, b.Id)
	}
	// A runner status report without it keeps the server's record.
	w.status(t, w.r1, env.Id, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, nil)
	if last := w.get(t, w.alice, env.Id).GetStatus().GetLastBackup(); last.GetId() != b.Id {
		t.Fatalf("after a status report without it, lastBackup = %v", last)
	}
	// The same id for another environment (r2's) is taken.
	dup := w.backup(other, 1, "stop")
	dup.Id = b.Id
	if err := w.report(w.r2, dup); code(err) != connect.CodeInvalidArgument && code(err) != connect.CodeAlreadyExists {
		t.Fatalf("another environment's id: %v", err)
	}
}

// TestBackupCallsFollowOwnership: another user neither lists, backs up nor
// restores someone's environment (NotFound, as for GetEnvironment), and
// cannot restore their own environment from someone else's backup; a
// create cannot smuggle a restore in.
func TestBackupCallsFollowOwnership(t *testing.T) {
	w := newBackupWorld(t, nil)
	ctx := context.Background()
	env := w.running(t, w.alice, "work")
	w.advance(time.Second)
	first := w.backup(env, 1, "periodic")
	if err := w.report(w.r1, first); err != nil {
		t.Fatal(err)
	}
	w.advance(time.Minute)
	second := w.backup(env, 2, "manual")
	if err := w.report(w.r1, second); err != nil {
		t.Fatal(err)
	}
	got, err := w.list(t, w.alice, env.GetMetadata().GetName())
	if err != nil || len(got) != 2 || got[0].Id != second.Id || got[1].Id != first.Id {
		t.Fatalf("alice lists %v, %v; want newest first", got, err)
	}

	if got, err := w.list(t, w.bob, env.Id); code(err) != connect.CodeNotFound || got != nil {
		t.Errorf("bob lists alice's backups: %v, %v", got, err)
	}
	if _, err := w.bob.envs.BackupEnvironment(ctx, connect.NewRequest(&covev1.BackupEnvironmentRequest{Id: env.Id})); code(err) != connect.CodeNotFound {
		t.Errorf("bob backs up alice's environment: %v", err)
	}
	if _, err := w.bob.envs.RestoreEnvironment(ctx, connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: env.Id, BackupId: first.Id})); code(err) != connect.CodeNotFound {
		t.Errorf("bob restores alice's environment: %v", err)
	}
	mine := w.running(t, w.bob, "mine")
	if _, err := w.bob.envs.RestoreEnvironment(ctx, connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: mine.Id, BackupId: first.Id})); code(err) != connect.CodeNotFound {
		t.Errorf("bob restores his environment from alice's backup: %v", err)
	}
	if r := w.get(t, w.bob, mine.Id).GetSpec().GetRestore(); r != nil {
		t.Errorf("a refused restore left spec.restore %v", r)
	}
	spec := gitSpec("https://example.com/repo.git")
	spec.Restore = &covev1.RestoreRequest{BackupId: first.Id, Generation: 1}
	if _, err := w.bob.create("smuggled", spec); code(err) != connect.CodeInvalidArgument || !strings.Contains(message(err), "spec.restore") {
		t.Errorf("create with spec.restore: %v", err)
	}
	spec = gitSpec("https://example.com/repo.git")
	spec.BackupGeneration = 3
	if _, err := w.bob.create("smuggled", spec); code(err) != connect.CodeInvalidArgument {
		t.Errorf("create with spec.backupGeneration: %v", err)
	}

	// Alice: a manual backup bumps the generation; restore without an id
	// takes the latest and backs up first; a restore by id takes that one.
	resp, err := w.alice.envs.BackupEnvironment(ctx, connect.NewRequest(&covev1.BackupEnvironmentRequest{Id: "work"}))
	if err != nil || resp.Msg.Environment.GetSpec().GetBackupGeneration() != 1 {
		t.Fatalf("backup: %v, generation %d", err, resp.Msg.GetEnvironment().GetSpec().GetBackupGeneration())
	}
	rr, err := w.alice.envs.RestoreEnvironment(ctx, connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: "work"}))
	if err != nil {
		t.Fatal(err)
	}
	if r := rr.Msg.Environment.GetSpec().GetRestore(); r.GetBackupId() != second.Id || r.GetGeneration() != 1 || !r.GetBackupFirst() {
		t.Fatalf("restore latest: spec.restore = %v", r)
	}
	rr, err = w.alice.envs.RestoreEnvironment(ctx, connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: "work", BackupId: first.Id}))
	if err != nil {
		t.Fatal(err)
	}
	if r := rr.Msg.Environment.GetSpec().GetRestore(); r.GetBackupId() != first.Id || r.GetGeneration() != 2 ||
		rr.Msg.Environment.GetSpec().GetDesiredPhase() != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING {
		t.Fatalf("restore by id: spec %v", rr.Msg.Environment.GetSpec())
	}
	if _, err := w.alice.envs.RestoreEnvironment(ctx, connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: "work", BackupId: env.Id + "/nope"})); code(err) != connect.CodeNotFound {
		t.Errorf("restore of an unknown backup: %v", err)
	}
	// A deleted environment is neither backed up nor restored.
	if _, err := w.alice.envs.DeleteEnvironment(ctx, connect.NewRequest(&covev1.DeleteEnvironmentRequest{Id: env.Id})); err != nil {
		t.Fatal(err)
	}
	if _, err := w.alice.envs.BackupEnvironment(ctx, connect.NewRequest(&covev1.BackupEnvironmentRequest{Id: env.Id})); code(err) != connect.CodeFailedPrecondition {
		t.Errorf("backup of a deleted environment: %v", err)
	}
	if _, err := w.alice.envs.RestoreEnvironment(ctx, connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: env.Id})); code(err) != connect.CodeFailedPrecondition {
		t.Errorf("restore of a deleted environment: %v", err)
	}
}
