package backupgc

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/covedev/cove/internal/backuprepo"
)

// catalog is an in-memory Catalog.
type catalog struct {
	mu        sync.Mutex
	orgs      []Organization
	backups   map[string][]BackupInfo // by organization
	envs      map[string]EnvInfo
	failNext  int // DeleteBackup calls to fail (a crash after the manifest's deletion)
	deletions []string
}

func (c *catalog) Organizations(context.Context) ([]Organization, error) { return c.orgs, nil }

func (c *catalog) Backups(_ context.Context, org string) ([]BackupInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.backups[org]), nil
}

func (c *catalog) Environment(_ context.Context, id string) (EnvInfo, error) { return c.envs[id], nil }

func (c *catalog) DeleteBackup(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failNext > 0 {
		c.failNext--
		return errors.New("server killed")
	}
	for org, bs := range c.backups {
		c.backups[org] = slices.DeleteFunc(bs, func(b BackupInfo) bool { return b.ID == id })
	}
	c.deletions = append(c.deletions, id)
	return nil
}

func (c *catalog) ids(org string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, b := range c.backups[org] {
		out = append(out, b.ID)
	}
	slices.Sort(out)
	return out
}

// Retention deletes what the policy does not keep (manifest, then
// record), the deleted environment's backups after the grace, and the
// collector then removes their chunks; what is kept restores whole.
func TestJobRetentionThenGC(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	k, raw := newKey(t)
	repo := backuprepo.New(s, k, nil)
	clk := newClock()
	now := clk.Now()
	cat := &catalog{orgs: []Organization{{ID: "o1", Key: raw}}, backups: map[string][]BackupInfo{}, envs: map[string]EnvInfo{
		"live": {},
		"gone": {Deleted: true, DeletedAt: now.Add(-8 * 24 * time.Hour)},
	}}
	for i, name := range []string{"live-1", "live-2", "live-3"} {
		backup(t, repo, name, files("f", uint64(100+i), 200)...) // file 200 in all
		cat.backups["o1"] = append(cat.backups["o1"], BackupInfo{ID: name, EnvironmentID: "live", Time: now.Add(-time.Duration(3-i) * 24 * time.Hour)})
	}
	backup(t, repo, "gone-1", files("g", 300)...)
	cat.backups["o1"] = append(cat.backups["o1"], BackupInfo{ID: "gone-1", EnvironmentID: "gone", Time: now.Add(-9 * 24 * time.Hour)})

	job := &Job{Store: s, Catalog: cat, Policy: Policy{KeepLast: 1, DeletedGrace: 7 * 24 * time.Hour}, GC: Options{Grace: time.Hour}, Now: clk.Now}
	rep, err := job.RunOnce(ctx)
	must(t, err)
	if rep.BackupsDeleted != 3 || !slices.Equal(cat.ids("o1"), []string{"live-3"}) {
		t.Fatalf("deleted %d, left %v", rep.BackupsDeleted, cat.ids("o1"))
	}
	for _, name := range []string{"live-1", "live-2", "gone-1"} {
		if exists(t, s, backuprepo.ManifestKey(name)) {
			t.Errorf("manifest of %s left", name)
		}
	}
	for range 2 { // mark, then sweep
		clk.Add(2 * time.Hour)
		_, err := job.RunOnce(ctx)
		must(t, err)
	}
	for _, seed := range []uint64{100, 101, 300} {
		if exists(t, s, chunkOf(repo, seed)) {
			t.Errorf("chunk of a deleted backup (seed %d) left", seed)
		}
	}
	complete(t, repo, "live-3")
}

// A crash between a manifest's deletion and its record's leaves a record
// without manifest: the next run deletes the record, and nothing fails.
func TestJobCrashBetweenManifestAndRecord(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	k, raw := newKey(t)
	repo := backuprepo.New(s, k, nil)
	now := time.Now()
	cat := &catalog{orgs: []Organization{{ID: "o1", Key: raw}}, backups: map[string][]BackupInfo{}, envs: map[string]EnvInfo{"e": {}}, failNext: 1}
	for i, name := range []string{"e-1", "e-2"} {
		backup(t, repo, name, files("f", uint64(400+i))...)
		cat.backups["o1"] = append(cat.backups["o1"], BackupInfo{ID: name, EnvironmentID: "e", Time: now.Add(-time.Duration(2-i) * time.Hour)})
	}
	job := &Job{Store: s, Catalog: cat, Policy: Policy{KeepLast: 1}}
	if _, err := job.RunOnce(ctx); err == nil {
		t.Fatal("a failed record deletion is not reported")
	}
	if exists(t, s, backuprepo.ManifestKey("e-1")) || !slices.Contains(cat.ids("o1"), "e-1") {
		t.Fatal("the test must leave a record without its manifest")
	}
	rep, err := job.RunOnce(ctx)
	if err != nil {
		t.Fatalf("run after the crash: %v", err)
	}
	if rep.BackupsDeleted != 1 || !slices.Equal(cat.ids("o1"), []string{"e-2"}) {
		t.Fatalf("deleted %d, left %v", rep.BackupsDeleted, cat.ids("o1"))
	}
	complete(t, repo, "e-2")
}

// A record whose name is another organization's manifest never deletes
// that manifest.
func TestJobLeavesAnotherOrganizationsManifest(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	_, rawA := newKey(t)
	kb, _ := newKey(t)
	b := backuprepo.New(s, kb, nil)
	backup(t, b, "same-id", files("f", 500)...)
	now := time.Now()
	cat := &catalog{orgs: []Organization{{ID: "a", Key: rawA}}, backups: map[string][]BackupInfo{"a": {
		{ID: "same-id", EnvironmentID: "e", Time: now.Add(-2 * time.Hour)},
		{ID: "a-newer", EnvironmentID: "e", Time: now.Add(-time.Hour)},
	}}, envs: map[string]EnvInfo{"e": {}}}
	job := &Job{Store: s, Catalog: cat, Policy: Policy{KeepLast: 1}}
	if _, err := job.RunOnce(ctx); err == nil {
		t.Fatal("no error about the foreign manifest")
	}
	complete(t, b, "same-id")
}

// The set of referenced chunks costs a small, bounded amount of memory
// per chunk (sorted 8-byte prefixes), not whole ids; duplicates (every
// manifest lists the chunks it shares with others) cost nothing.
func TestRefSetMemory(t *testing.T) {
	const n = 1 << 20
	s := &refSet{}
	var id backuprepo.ChunkID
	for round := range 3 { // three manifests listing the same chunks
		for i := range n {
			id = backuprepo.ChunkID{}
			for j := range 8 {
				id[j] = byte((uint64(i) * 0x9e3779b97f4a7c15) >> (8 * j))
			}
			s.add(id)
			if round == 0 && i == n/2 {
				for j := range 3 {
					if !s.mayHave(id) || s.mayHave(backuprepo.ChunkID{byte(j), 1, 2, 3}) {
						t.Fatal("membership wrong")
					}
				}
			}
		}
	}
	s.merge()
	per := float64(8*(cap(s.sorted)+cap(s.batch))) / n
	t.Logf("%d chunk references: %.1f bytes each (%.0f MiB for 10 million)", s.len(), per, per*1e7/(1<<20))
	if s.len() != n {
		t.Fatalf("%d in the set, want %d", s.len(), n)
	}
	if per >= 16 { // a whole id alone is 32 bytes
		t.Fatalf("%.1f bytes per reference", per)
	}
}

// An environment deleted at a time the records do not say: the grace runs
// from the first run that saw it deleted (recorded in the storage, so a
// restarted server or another replica counts from the same time), and its
// backups all go once it has passed.
func TestJobDeletedEnvironmentGrace(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	k, raw := newKey(t)
	repo := backuprepo.New(s, k, nil)
	clk := newClock()
	backup(t, repo, "e-1", files("f", 600)...)
	backup(t, repo, "e-2", files("f", 601)...)
	cat := &catalog{orgs: []Organization{{ID: "o1", Key: raw}}, backups: map[string][]BackupInfo{"o1": {
		{ID: "e-1", EnvironmentID: "e", Time: clk.Now().Add(-60 * 24 * time.Hour)},
		{ID: "e-2", EnvironmentID: "e", Time: clk.Now().Add(-30 * 24 * time.Hour)},
	}}, envs: map[string]EnvInfo{"e": {Deleted: true}}}
	newJob := func() *Job {
		return &Job{Store: s, Catalog: cat, Policy: Policy{KeepLast: 5, DeletedGrace: 7 * 24 * time.Hour}, Now: clk.Now}
	}
	if rep, err := newJob().RunOnce(ctx); err != nil || rep.BackupsDeleted != 0 {
		t.Fatalf("first sight of the deletion: deleted %d, %v", rep.BackupsDeleted, err)
	}
	clk.Add(6 * 24 * time.Hour)
	if rep, err := newJob().RunOnce(ctx); err != nil || rep.BackupsDeleted != 0 { // a new job: a restarted server
		t.Fatalf("within the grace: deleted %d, %v", rep.BackupsDeleted, err)
	}
	complete(t, repo, "e-1")
	clk.Add(24 * time.Hour)
	if rep, err := newJob().RunOnce(ctx); err != nil || rep.BackupsDeleted != 2 {
		t.Fatalf("after the grace: deleted %d, %v", rep.BackupsDeleted, err)
	}
	if n := countKeys(t, s, repo.GCKey("deleted/")); n != 0 {
		t.Fatalf("%d deletion notes left", n)
	}
}

// A manifest no record names (its report never reached the server) is
// deleted once older than the grace, and its chunks collected after; a
// young one is kept, and so is every manifest of an organization whose
// records could not be listed.
func TestJobOrphanManifests(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	k, raw := newKey(t)
	repo := backuprepo.New(s, k, nil)
	clk := newClock()
	backup(t, repo, "e/kept", files("f", 700)...)
	backup(t, repo, "e/orphan", files("f", 701)...)
	cat := &catalog{orgs: []Organization{{ID: "o1", Key: raw}}, backups: map[string][]BackupInfo{"o1": {
		{ID: "e/kept", EnvironmentID: "e", Time: clk.Now()},
	}}, envs: map[string]EnvInfo{"e": {}}}
	job := &Job{Store: s, Catalog: cat, Policy: Policy{KeepLast: 5, DeletedGrace: 7 * 24 * time.Hour}, GC: Options{Grace: time.Hour}, Now: clk.Now}
	rep, err := job.RunOnce(ctx)
	must(t, err)
	if rep.GC.Orphans != 0 || !exists(t, s, backuprepo.ManifestKey("e/orphan")) {
		t.Fatalf("a young orphan deleted: %+v", rep.GC)
	}
	clk.Add(8 * 24 * time.Hour)
	failing := &failingBackups{catalog: cat}
	if _, err := (&Job{Store: s, Catalog: failing, Policy: job.Policy, Now: clk.Now}).RunOnce(ctx); err == nil {
		t.Fatal("a failed listing of records is not reported")
	}
	if !exists(t, s, backuprepo.ManifestKey("e/orphan")) {
		t.Fatal("an orphan deleted while the records could not be listed")
	}
	rep, err = job.RunOnce(ctx)
	must(t, err)
	if rep.GC.Orphans != 1 || exists(t, s, backuprepo.ManifestKey("e/orphan")) {
		t.Fatalf("old orphan not deleted: %+v", rep.GC)
	}
	for range 2 {
		clk.Add(2 * time.Hour)
		_, err := job.RunOnce(ctx)
		must(t, err)
	}
	if exists(t, s, chunkOf(repo, 701)) {
		t.Fatal("the orphan's chunk left")
	}
	complete(t, repo, "e/kept")
}

// failingBackups is a catalog whose backup listing fails.
type failingBackups struct{ *catalog }

func (f *failingBackups) Backups(context.Context, string) ([]BackupInfo, error) {
	return nil, errors.New("database unavailable")
}
