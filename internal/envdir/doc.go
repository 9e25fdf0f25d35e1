// Package envdir owns an environment's directory on the runner host: where
// each of its files lives (Layout) and its state file, which records what
// the runner has done for the environment so that a restarted runner
// continues from there.
//
// The state file is versioned. Each step of the runner owns one section
// of it (the clone step "content", the image step "image", ...); the
// runner saves the file in one place, after a step returns. Files written
// by older runners are migrated when they are read (migrate.go); a file
// written by a newer runner is refused rather than read with fields
// silently missing.
//
// Everything under the directory that the environment can write (its
// workspace, upper dir, volumes, run directory) is named here but never
// trusted: host code reaches into those trees through internal/confine.
package envdir
