package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

type report struct {
	machine  benchkit.Machine
	opts     options
	cache    string
	work, fs string
	versions map[string]string
	data     treeStats
	change   changeSummary
	res      results
	checks   map[string]*restoreCheck
	tools    []string // "cove" first
}

func (r *report) add(tool string, s step, res result) {
	if r.res[tool] == nil {
		r.res[tool] = &[nSteps][]result{}
	}
	r.res[tool][s] = append(r.res[tool][s], res)
}

// check compares a restored tree with the source's digest.
func (r *report) check(tool string, want map[string]node, dst string) error {
	got, err := digest(dst)
	if err != nil {
		return fmt.Errorf("read %s's restore: %w", tool, err)
	}
	c := r.checks[tool]
	if c == nil {
		c = &restoreCheck{}
		r.checks[tool] = c
	}
	diffs, n := compare(want, got, 10)
	c.rounds++
	c.entries = len(want)
	c.count += n
	if len(c.diffs) == 0 {
		c.diffs = diffs
	}
	return nil
}

// summary is the median over rounds of one tool's step, or why there is
// none.
type summary struct {
	ok               bool
	wall, cpu        time.Duration
	onDisk           time.Duration // wall and then a syncfs (restores)
	stored           int64
	walls            []time.Duration
	note, errText    string
	rounds, okRounds int
}

func (r *report) summary(tool string, s step) summary {
	var sm summary
	rs := r.res[tool]
	if rs == nil {
		sm.errText = "not run"
		return sm
	}
	var walls, cpus, onDisk []time.Duration
	var stored []int64
	for _, x := range rs[s] {
		sm.rounds++
		if x.err != nil {
			sm.errText = x.err.Error()
			continue
		}
		walls = append(walls, x.wall)
		onDisk = append(onDisk, x.wall+x.synced)
		cpus = append(cpus, x.cpu)
		stored = append(stored, x.stored)
		sm.note = x.note
	}
	if len(walls) == 0 {
		if sm.errText == "" {
			sm.errText = "not run (an earlier step failed)"
		}
		return sm
	}
	sm.ok, sm.okRounds, sm.walls = true, len(walls), walls
	sm.wall, sm.cpu = benchkit.Percentile(walls, 50), benchkit.Percentile(cpus, 50)
	sm.onDisk = benchkit.Percentile(onDisk, 50)
	slices.Sort(stored)
	sm.stored = stored[(len(stored)-1)/2]
	return sm
}

func (r *report) print(out io.Writer) {
	m, o := r.machine, r.opts
	fmt.Fprintf(out, "bench/backup  %s  %d CPUs (%s), kernel %s\n", m.When.UTC().Format(time.RFC3339), m.CPUs, m.CPUModel, m.Kernel)
	fmt.Fprintf(out, "load average at start %s, at end %s (the machine is shared)\n", m.LoadStart, m.LoadEnd)
	fmt.Fprintf(out, "data set: %s in %d files (%d hard-linked), %d directories, %d symlinks: a source tree under git (21 commits, packed), node_modules, 4 build outputs; seed %d, cached in %s\n",
		bytesText(r.data.bytes), r.data.files, r.data.hardlinked, r.data.dirs, r.data.symlinks, o.seed, filepath.Dir(r.cache))
	if o.runs(stepIncr) {
		fmt.Fprintf(out, "each ~1%% change before an incremental (the last one): %s\n", r.change)
	}
	fmt.Fprintf(out, "storage: everything (copy of the data set, cove's localblob store, the tar archives, restic's repository, restores) on %s, under %s\n", r.fs, r.work)
	drop := "page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every timed step but the warm ones (tree walked first, as a running environment's would be cached), every tool alike"
	if !o.dropCaches {
		drop = "page cache NOT dropped between steps (-drop-caches=false)"
	}
	fmt.Fprintf(out, "%s; %d round(s), the tools' order rotating; medians over rounds\n", drop, o.rounds)
	if o.only != "" {
		fmt.Fprintf(out, "-only %s: the other steps were not run (with -only restore, the restore reads the full backup)\n", o.only)
	}
	fmt.Fprintf(out, "tools: cove (internal/backupfs in process, GOMAXPROCS %d, localblob.BatchedSync: one syncfs before and after each manifest); %s | %s at -%d -T0 (archive fsynced); %s (local repository, compression auto, cache kept)\n",
		runtime.GOMAXPROCS(0), r.versions["tar"], r.versions["zstd"], o.level, r.versions["restic"])
	if !o.packs {
		fmt.Fprintf(out, "cove stores each chunk as an object of its own (-packs=false), as before packs: not what cove ships\n")
	}
	if o.syncfs {
		fmt.Fprintf(out, "cove-syncfs is an experiment, not what cove ships: cove's code on a store that does not fsync each object, with one syncfs(2) at the end of each backup (timed)\n")
	}
	fmt.Fprintln(out)

	fmt.Fprintf(out, "%-26s", "")
	for _, t := range r.tools {
		fmt.Fprintf(out, " | %-28s", t)
	}
	fmt.Fprintf(out, "\n%-26s", "step")
	for range r.tools {
		fmt.Fprintf(out, " | %9s %8s %9s", "time", "cpu", "stored")
	}
	fmt.Fprintln(out)
	for s := range nSteps {
		if !o.runs(s) {
			continue
		}
		fmt.Fprintf(out, "%-26s", stepNames[s])
		for _, t := range r.tools {
			sm := r.summary(t, s)
			if !sm.ok {
				fmt.Fprintf(out, " | %-28s", "failed (below)")
				continue
			}
			stored := bytesText(sm.stored)
			if s == stepRestore {
				stored = "-"
			}
			fmt.Fprintf(out, " | %9s %8s %9s", secs(sm.wall), secs(sm.cpu), stored)
		}
		fmt.Fprintln(out)
	}

	if o.runs(stepRestore) {
		// tar and restic return with the restore in the page cache;
		// cove returns once it is on disk.
		fmt.Fprintf(out, "%-26s", "restore, then on disk")
		for _, t := range r.tools {
			if sm := r.summary(t, stepRestore); sm.ok {
				fmt.Fprintf(out, " | %9s %-18s", secs(sm.onDisk), "(+ syncfs after)")
			} else {
				fmt.Fprintf(out, " | %-28s", "failed (below)")
			}
		}
		fmt.Fprintln(out)
	}

	fmt.Fprintf(out, "\ncove next to each baseline (time ratio, stored ratio; below 1 is better for cove):\n")
	for s := range nSteps {
		if !o.runs(s) {
			continue
		}
		c := r.summary("cove", s)
		fmt.Fprintf(out, "  %-26s", stepNames[s])
		for _, t := range r.tools[1:] {
			b := r.summary(t, s)
			if !c.ok || !b.ok {
				fmt.Fprintf(out, "  %-10s -", t)
				continue
			}
			fmt.Fprintf(out, "  %-10s %s", t, ratio(c.wall, b.wall))
			if s != stepRestore {
				fmt.Fprintf(out, " %s", ratio(time.Duration(c.stored), time.Duration(b.stored)))
			}
		}
		fmt.Fprintln(out)
	}

	fmt.Fprintf(out, "\ntargets (issue 13):\n")
	incr, rincr := r.summary("cove", stepIncr), r.summary("restic", stepIncr)
	wincr, rwincr := r.summary("cove", stepIncrWarm), r.summary("restic", stepIncrWarm)
	full, rfull := r.summary("cove", stepFull), r.summary("restic", stepFull)
	rest, trest := r.summary("cove", stepRestore), r.summary("tar|zstd", stepRestore)
	target(out, "cold incremental < 1 s", incr.ok, func() (string, bool) { return secs(incr.wall), incr.wall < time.Second })
	target(out, "cold incremental ≤ 0.5× restic's", incr.ok && rincr.ok, func() (string, bool) {
		return ratio(incr.wall, rincr.wall), float64(incr.wall) <= 0.5*float64(rincr.wall)
	})
	target(out, "warm incremental < 1 s", wincr.ok, func() (string, bool) { return secs(wincr.wall), wincr.wall < time.Second })
	target(out, "warm incremental ≤ 0.5× restic's", wincr.ok && rwincr.ok, func() (string, bool) {
		return ratio(wincr.wall, rwincr.wall), float64(wincr.wall) <= 0.5*float64(rwincr.wall)
	})
	target(out, "full backup ≤ restic's", full.ok && rfull.ok, func() (string, bool) { return ratio(full.wall, rfull.wall), full.wall <= rfull.wall })
	target(out, "restore ≤ zstd -d | tar x", rest.ok && trest.ok, func() (string, bool) { return ratio(rest.wall, trest.wall), rest.wall <= trest.wall })
	fmt.Fprintf(out, "  (not a target: both on disk, cove's restore next to tar's followed by a syncfs: ")
	if rest.ok && trest.ok {
		fmt.Fprintf(out, "%s)\n", ratio(rest.onDisk, trest.onDisk))
	} else {
		fmt.Fprintf(out, "not measured)\n")
	}

	fmt.Fprintf(out, "\nrestores checked against the source (content, mode, owner, mtime, symlink targets, hard links):\n")
	for _, t := range r.tools {
		c := r.checks[t]
		switch {
		case c == nil:
			fmt.Fprintf(out, "  %-10s not checked (no restore)\n", t)
		case c.count == 0:
			fmt.Fprintf(out, "  %-10s identical (%d entries, %d round(s))\n", t, c.entries, c.rounds)
		default:
			fmt.Fprintf(out, "  %-10s WRONG: %d differences over %d round(s), first: %s\n", t, c.count, c.rounds, strings.Join(c.diffs, "; "))
		}
	}

	fmt.Fprintf(out, "\nevery round's wall time:\n")
	for _, t := range r.tools {
		for s := range nSteps {
			if !o.runs(s) {
				continue
			}
			var parts []string
			for _, x := range r.res.of(t, s) {
				if x.err != nil {
					parts = append(parts, "failed")
				} else {
					parts = append(parts, secs(x.wall))
				}
			}
			note := ""
			if sm := r.summary(t, s); sm.note != "" {
				note = "  (" + sm.note + ")"
			}
			fmt.Fprintf(out, "  %-10s %-26s %s%s\n", t, stepNames[s], strings.Join(parts, " "), note)
		}
	}
	var errs []string
	for _, t := range r.tools {
		for s := range nSteps {
			for _, x := range r.res.of(t, s) {
				if x.err != nil {
					errs = append(errs, fmt.Sprintf("  %s, %s: %v", t, stepNames[s], x.err))
					break
				}
			}
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(out, "\nfailures:\n%s\n", strings.Join(errs, "\n"))
	}
}

func (rs results) of(tool string, s step) []result {
	if rs[tool] == nil {
		return nil
	}
	return rs[tool][s]
}

// failure is the run's error: a tool that failed or a wrong restore (the
// figures are printed either way).
func (r *report) failure() error {
	var bad []string
	for _, t := range r.tools {
		for s := range nSteps {
			if slices.ContainsFunc(r.res.of(t, s), func(x result) bool { return x.err != nil }) {
				bad = append(bad, fmt.Sprintf("%s failed at %s", t, stepNames[s]))
				break
			}
		}
		if c := r.checks[t]; c != nil && c.count > 0 {
			bad = append(bad, fmt.Sprintf("%s's restore differs from the source", t))
		}
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; ") + " (see above)")
	}
	return nil
}

func target(out io.Writer, what string, measured bool, f func() (string, bool)) {
	if !measured {
		fmt.Fprintf(out, "  %-34s not measured\n", what)
		return
	}
	v, ok := f()
	verdict := "met"
	if !ok {
		verdict = "NOT met"
	}
	fmt.Fprintf(out, "  %-34s %-8s %s\n", what, v, verdict)
}

func secs(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func ratio(a, b time.Duration) string {
	if a == 0 && b == 0 {
		return "same"
	}
	if b == 0 {
		return "∞"
	}
	return fmt.Sprintf("%.2f×", float64(a)/float64(b))
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// mountOf finds, in a mountinfo text, the mount holding p (the longest
// mount point that is p or a parent of it) and describes it.
func mountOf(mountinfo, p string) string {
	best, desc := "", "unknown"
	for _, line := range strings.Split(mountinfo, "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 2 {
			continue
		}
		mp := f[4]
		if (p == mp || strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, desc = mp, fmt.Sprintf("%s %s (mounted on %s)", g[0], g[1], mp)
		}
	}
	return desc
}
