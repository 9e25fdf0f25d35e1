// Command backup compares cove's backups (internal/backupfs over
// internal/backuprepo on a local directory store) with the two usual ways,
// all measured in the same run on the same data on the same file system:
//
//   - tar | zstd (Gitpod's approach): full = tar c | zstd -3 -T0,
//     incremental = GNU tar --listed-incremental, restore = each archive
//     through zstd -d into tar x, in order;
//   - restic (Debian's package) with a local repository (compression
//     auto), its cache in the work dir kept between steps.
//
// The data set is a ~1 GiB workspace generated once from a seed into a
// cache directory (rebuilt when missing or when its version stamp
// differs): a source tree of thousands of small text files under git with
// a history of commits made by git itself, a node_modules-like tree of
// small files with symlinks and hard links, and four build outputs of 84
// to 197 MiB of mixed compressibility. Each round copies it to a work
// dir, then for every tool: a full backup; the same ~1% change (files
// edited, added, deleted, a region of a binary rewritten, a git commit);
// an incremental backup; an incremental with nothing changed; a restore
// of the latest backup into an empty directory, checked against the
// source (content, mode, owner, mtime, symlinks, hard links) — a wrong
// restore makes the run fail. The page cache is dropped before every
// timed step (every tool alike); the tools' order rotates each round;
// figures are medians over rounds.
//
// Usage (as root, from the repository root; needs tar, zstd, restic and
// git: scripts/install-deps.sh bench):
//
//	go run ./bench/backup [-rounds 3] [-size BYTES] [-dir /var/tmp] [-cpuprofile DIR] [-only full|incr|restore]
//
// -only full runs the full backup alone; -only incr a full backup and the
// incremental after it (cold, then warm); -only restore a full backup and
// the restore of it (which then reads a full backup, not an incremental
// chain): to iterate on one step.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
	"golang.org/x/sys/unix"
)

type options struct {
	rounds, level int
	size, seed    int64
	cache, dir    string
	profile       string
	dropCaches    bool
	syncfs        bool
	packs         bool
	only          string // "" (every step), "full", "incr" or "restore" (see runs)
}

// runs reports whether step s is run: with -only full, the full backup
// alone; with -only restore, the full backup (the restore's source, still
// timed and shown) and the restore of it.
func (o options) runs(s step) bool {
	switch o.only {
	case "full":
		return s == stepFull
	case "incr":
		return s == stepFull || s == stepIncr || s == stepIncrWarm
	case "restore":
		return s == stepFull || s == stepRestore
	}
	return true
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 3, "rounds (each a fresh copy of the data set and fresh repositories); figures are medians")
	flag.Int64Var(&o.size, "size", 1<<30, "data set size, bytes (about)")
	flag.Int64Var(&o.seed, "seed", 1, "data set seed")
	flag.IntVar(&o.level, "zstd-level", 3, "zstd level of the tar baseline (3 is zstd's default)")
	flag.StringVar(&o.cache, "cache", "/var/cache/cove-bench-backup", "where the generated data set is kept between runs")
	flag.StringVar(&o.dir, "dir", "/var/tmp", "work directory's parent: the copy of the data set, every tool's storage and the restores go there (one file system for all)")
	flag.StringVar(&o.profile, "cpuprofile", "", "write CPU profiles and execution traces of cove's steps (last round) into this directory")
	flag.BoolVar(&o.dropCaches, "drop-caches", true, "drop the page cache before every timed step but the warm ones")
	flag.BoolVar(&o.packs, "packs", true, "cove stores its chunks in packs, as it ships; false: each chunk an object of its own, as before packs (backuprepo.Repo.SetPacks)")
	flag.BoolVar(&o.syncfs, "experiment-syncfs", false, "add cove-syncfs: cove on a store without per-object fsync, one syncfs per backup (what localblob's fsyncs cost)")
	flag.StringVar(&o.only, "only", "", "\"full\": run only the full backup; \"incr\": only a full backup and the incrementals after it; \"restore\": only a full backup and the restore of it (to iterate on one step; the others are skipped)")
	flag.Parse()
	benchkit.Main("bench/backup", func(ctx context.Context) error { return run(ctx, o, os.Stdout) })
}

// result is one tool's figures of one step in one round.
type result struct {
	wall   time.Duration
	cpu    time.Duration
	stored int64 // bytes added to the tool's storage by the step
	note   string
	err    error
	// synced is how long a syncfs(2) of a restore's file system took
	// right after the tool returned (not in wall): what writing its
	// restore to disk still cost. cove's restore syncs before returning.
	synced time.Duration
}

// results[tool][step] holds every round's result.
type results map[string]*[nSteps][]result

// restoreCheck is the outcome of checking a tool's restores.
type restoreCheck struct {
	rounds  int
	entries int
	diffs   []string
	count   int
}

func run(ctx context.Context, o options, out io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root: restores keep owners, and the page cache is dropped between steps")
	}
	for _, t := range []string{"tar", "zstd", "restic", "git", "cp"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s not found: install the benchmark's baselines with scripts/install-deps.sh bench", t)
		}
	}
	if o.only != "" && o.only != "full" && o.only != "incr" && o.only != "restore" {
		return fmt.Errorf("-only %q: want \"full\", \"incr\" or \"restore\"", o.only)
	}
	if o.rounds < 1 || o.size < 64<<20 {
		return errors.New("-rounds must be at least 1 and -size at least 64 MiB")
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}
	var cl benchkit.Cleanups
	defer cl.Run()
	m := benchkit.MachineInfo(ctx, "runc")
	ds := dataset{seed: o.seed, size: o.size}
	tree, err := ds.ensure(ctx, o.cache)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(o.dir, "cove-bench-backup-")
	if err != nil {
		return err
	}
	cl.Add(func() { benchkit.RemoveTree(tmp) })
	rep := report{machine: m, opts: o, cache: tree, work: tmp, fs: fileSystemOf(tmp), versions: toolVersions(ctx),
		res: results{}, checks: map[string]*restoreCheck{}}
	if cfs := fileSystemOf(tree); cfs != rep.fs {
		benchkit.Progress("note: the data set's cache is on %s, the work dir on %s (only the work dir's copy is read)", cfs, rep.fs)
	}
	for r := range o.rounds {
		if err := oneRound(ctx, o, r, tree, filepath.Join(tmp, fmt.Sprintf("round-%d", r)), &rep); err != nil {
			return err
		}
		if r < o.rounds-1 { // a long run shows its figures so far
			rep.machine.LoadEnd = benchkit.LoadAvg()
			fmt.Fprintf(out, "=== after round %d of %d (medians so far)\n", r+1, o.rounds)
			rep.print(out)
			fmt.Fprintf(out, "===\n\n")
		}
	}
	rep.machine.LoadEnd = benchkit.LoadAvg()
	rep.print(out)
	return rep.failure()
}

func oneRound(ctx context.Context, o options, round int, tree, dir string, rep *report) error {
	defer benchkit.RemoveTree(dir)
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	benchkit.Progress("round %d: copying the data set", round+1)
	if out, err := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", tree, src).CombinedOutput(); err != nil {
		return fmt.Errorf("copy the data set: %w: %s", err, out)
	}
	if round == 0 {
		d, err := walkTree(src, false)
		if err != nil {
			return err
		}
		rep.data = stats(d)
	}
	profile := ""
	if round == o.rounds-1 {
		profile = o.profile
	}
	cove, err := newCoveTool(filepath.Join(dir, "cove"), profile, false, o.packs)
	if err != nil {
		return err
	}
	defer cove.close()
	tar, err := newTarTool(filepath.Join(dir, "tar"), o.level)
	if err != nil {
		return err
	}
	restic, err := newResticTool(ctx, filepath.Join(dir, "restic"))
	if err != nil {
		return err
	}
	tools := []tool{cove, tar, restic}
	if o.syncfs {
		exp, err := newCoveTool(filepath.Join(dir, "cove-syncfs"), "", true, o.packs)
		if err != nil {
			return err
		}
		defer exp.close()
		tools = append(tools, exp)
	}
	if round == 0 {
		for _, t := range tools {
			rep.tools = append(rep.tools, t.name())
		}
	}
	order := slices.Concat(tools[round%len(tools):], tools[:round%len(tools)])
	failed := map[string]bool{}
	for s := range nSteps {
		if !o.runs(s) {
			continue
		}
		if s == stepIncr || s == stepIncrWarm {
			sum, err := change(ctx, src, o.seed+1000+int64(s))
			if err != nil {
				return fmt.Errorf("change the data set: %w", err)
			}
			rep.change = sum
		}
		if s == stepIncrWarm {
			if _, err := dirSize(src); err != nil { // stats every entry: metadata cached
				return err
			}
		}
		var want map[string]node
		if s == stepRestore {
			if want, err = digest(src); err != nil {
				return err
			}
		}
		for _, t := range order {
			if failed[t.name()] {
				continue
			}
			res, dst, err := timedStep(ctx, o, t, s, src, dir)
			if ctx.Err() != nil { // interrupted: no figure, no more steps
				return ctx.Err()
			}
			benchkit.Progress("round %d: %s: %s: %s (load %s)", round+1, t.name(), stepNames[s], secs(res.wall), benchkit.LoadAvg())
			if res.err != nil {
				failed[t.name()] = true
				benchkit.Progress("round %d: %s: %s failed: %v", round+1, t.name(), stepNames[s], res.err)
			}
			rep.add(t.name(), s, res)
			if err != nil {
				return err
			}
			if dst != "" {
				if res.err == nil {
					if err := rep.check(t.name(), want, dst); err != nil {
						return err
					}
				}
				benchkit.RemoveTree(dst)
			}
		}
	}
	return nil
}

// timedStep runs step s of tool t, after a sync and a drop of the page
// cache (untimed). A restore goes into a new empty directory, returned.
// The error is the harness's own (the tool's is in the result).
func timedStep(ctx context.Context, o options, t tool, s step, src, dir string) (res result, dst string, err error) {
	if s == stepRestore {
		dst = filepath.Join(dir, "restore-"+strings.ReplaceAll(t.name(), "|", "-"))
		if err := os.Mkdir(dst, 0o755); err != nil {
			return res, "", err
		}
	}
	before, err := dirSize(t.storage())
	if err != nil {
		return res, dst, err
	}
	unix.Sync()
	if o.dropCaches && !s.warm() {
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			return res, dst, fmt.Errorf("drop the page cache: %w", err)
		}
	}
	began := time.Now()
	var u usage
	if s == stepRestore {
		u, res.err = t.restore(ctx, dst)
	} else {
		u, res.err = t.backup(ctx, src, s)
	}
	res.wall = time.Since(began)
	res.cpu, res.note = u.cpu, u.note
	if s == stepRestore && res.err == nil {
		if res.synced, err = syncfsTook(dst); err != nil {
			return res, dst, err
		}
	}
	after, err := dirSize(t.storage())
	res.stored = after - before
	return res, dst, err
}

// syncfsTook times a syncfs(2) of the file system holding dir.
func syncfsTook(dir string) (time.Duration, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	began := time.Now()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return 0, fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return time.Since(began), nil
}

// fileSystemOf names the file system holding p: type, source and mount
// point.
func fileSystemOf(p string) string {
	f, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "unknown"
	}
	return mountOf(string(f), p)
}

// toolVersions names each baseline tool with its version ("restic
// 0.14.0").
func toolVersions(ctx context.Context) map[string]string {
	v := map[string]string{}
	for name, args := range map[string][]string{"tar": {"--version"}, "zstd": {"-V"}, "restic": {"version"}, "git": {"--version"}} {
		out, err := exec.CommandContext(ctx, name, args...).Output()
		v[name] = name + " " + versionIn(string(out))
		if err != nil {
			v[name] = name + " (unknown version)"
		}
	}
	return v
}

// versionIn finds the first version number ("1.34", "v1.5.4") in a
// tool's version text.
func versionIn(s string) string {
	for _, f := range strings.Fields(s) {
		f = strings.TrimRight(strings.TrimPrefix(f, "v"), ",")
		if len(f) > 0 && f[0] >= '0' && f[0] <= '9' && strings.Contains(f, ".") {
			return f
		}
	}
	return "(unknown version)"
}
