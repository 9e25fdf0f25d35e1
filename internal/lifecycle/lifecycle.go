// Package lifecycle runs a dev container's lifecycle commands
// (onCreateCommand, updateContentCommand, postCreateCommand,
// postStartCommand, postAttachCommand) in the order and with the semantics
// of the Dev Containers specification and its reference CLI: string
// commands run with /bin/sh -c, array commands without a shell, object
// commands run their members in parallel and all must succeed; commands
// from image metadata and features run before devcontainer.json's; the
// first failure stops the sequence; waitFor names the stage after which the
// environment is reported ready while later stages go on.
//
// initializeCommand runs on the user's machine in the specification. cove
// creates environments remotely, where there is no such machine, so it is
// recorded and logged as not run.
//
// Commands run through a Runner (the runner implements it over the agent:
// remoteUser, remoteEnv, userEnvProbe and the workspace folder as working
// directory are fixed by the caller).
package lifecycle

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
)

// Stage names, as in devcontainer.json.
const (
	StageInitialize    = "initializeCommand"
	StageOnCreate      = "onCreateCommand"
	StageUpdateContent = "updateContentCommand"
	StagePostCreate    = "postCreateCommand"
	StagePostStart     = "postStartCommand"
	StagePostAttach    = "postAttachCommand"

	// DefaultWaitFor is the spec's default for waitFor.
	DefaultWaitFor = StageUpdateContent
)

// stageOrder is the spec's order; waitFor must name one of these.
var stageOrder = []string{StageInitialize, StageOnCreate, StageUpdateContent, StagePostCreate, StagePostStart, StagePostAttach}

// Command is one lifecycle command in one of the three forms: Shell (the
// string form, run with /bin/sh -c), Args (the array form, no shell) or
// Parallel (the object form: named string or array commands run
// concurrently). An empty command is skipped.
type Command struct {
	Shell    string
	Args     []string
	Parallel map[string]Command

	// Origin names where the command comes from, for the log: e.g.
	// "devcontainer.json" (the default when empty), "Feature 'ghcr.io/x/y:1'"
	// or "image metadata".
	Origin string
}

// IsZero reports whether c has nothing to run.
func (c Command) IsZero() bool {
	return c.Shell == "" && len(c.Args) == 0 && len(c.Parallel) == 0
}

// Hooks are an environment's lifecycle commands. Each stage's commands run
// in order: image metadata and features first, devcontainer.json last.
type Hooks struct {
	Initialize    []Command // never run; logged
	OnCreate      []Command
	UpdateContent []Command
	PostCreate    []Command
	PostStart     []Command
	PostAttach    []Command // run per SSH session by RunStage, not by Run
	WaitFor       string    // a stage name; "" means DefaultWaitFor
}

// Runner runs one command (Shell or Args; never Parallel) inside the
// environment, writing its output (stdout and stderr) to out, and returns
// its exit code. err is for a command that could not be run at all.
type Runner interface {
	Exec(ctx context.Context, cmd Command, out io.Writer) (exitCode int, err error)
}

// StartKind says why the environment's container is starting.
type StartKind int

const (
	// Create: a new environment; the create stages run, then postStart.
	Create StartKind = iota
	// Start: an existing environment starts again; only postStart runs.
	Start
	// Rebuild: the container was rebuilt from a new configuration; like
	// Create (the workspace is kept, the commands set the new container up).
	Rebuild
)

func (k StartKind) String() string {
	switch k {
	case Create:
		return "create"
	case Start:
		return "start"
	case Rebuild:
		return "rebuild"
	}
	return fmt.Sprintf("StartKind(%d)", int(k))
}

// State is what the caller persists per environment between starts.
type State struct {
	// CreatedDone is set once the create stages were run for the current
	// container (successfully or not: like the reference CLI, cove does not
	// run them again on the next start; the user fixes things and rebuilds).
	CreatedDone bool
}

// Kind returns the StartKind for a start given the persisted state.
func (s State) Kind(rebuild bool) StartKind {
	switch {
	case rebuild:
		return Rebuild
	case !s.CreatedDone:
		return Create
	}
	return Start
}

// Result describes a Run.
type Result struct {
	// CreateRan reports that the create stages were started; the caller
	// sets State.CreatedDone from it.
	CreateRan bool
	// Ready reports that onReady was called.
	Ready bool
	// Failed is set when a command failed or could not run.
	Failed *Failure
}

// Failure is the command that stopped a Run.
type Failure struct {
	Stage    string // e.g. "postCreateCommand"
	Name     string // the member of an object-form command, if any
	Command  string // the command as the user wrote it
	ExitCode int    // -1 when it could not run
}

// stage is one stage's commands.
type stage struct {
	name string
	cmds []Command
}

// Run runs the lifecycle stages for kind, in the spec's order (create and
// rebuild: onCreate, updateContent, postCreate, postStart; start:
// postStart), writing a header per command and its output to log. onReady
// (may be nil) is called once, when the waitFor stage has completed (at
// once for kind Start unless waitFor is postStartCommand), so the caller
// can report the environment as running while later stages go on. Run stops
// at the first failing command and returns a user-visible error naming the
// stage, the command and its exit code, with Result.Failed set; onReady is
// then not called. A cancelled ctx returns ctx.Err().
func Run(ctx context.Context, r Runner, h Hooks, kind StartKind, log io.Writer, onReady func()) (Result, error) {
	log = &lockedWriter{w: log}
	var res Result
	waitFor := h.WaitFor
	if waitFor == "" {
		waitFor = DefaultWaitFor
	}
	if !slices.Contains(stageOrder, waitFor) {
		fmt.Fprintf(log, "Unknown waitFor %q; using %s.\n", waitFor, DefaultWaitFor)
		waitFor = DefaultWaitFor
	}
	ready := func() {
		if !res.Ready {
			res.Ready = true
			if onReady != nil {
				onReady()
			}
		}
	}

	var stages []stage
	if kind == Create || kind == Rebuild {
		for _, c := range h.Initialize {
			if !c.IsZero() {
				fmt.Fprintf(log, "The %s from %s is not run (it runs on the user's machine; cove runs remotely): %s\n",
					StageInitialize, origin(c), describe(c))
			}
		}
		res.CreateRan = true
		stages = append(stages,
			stage{StageOnCreate, h.OnCreate},
			stage{StageUpdateContent, h.UpdateContent},
			stage{StagePostCreate, h.PostCreate})
	} else if stageIndex(waitFor) < stageIndex(StagePostStart) {
		// The create stages ran when the environment was created.
		ready()
	}
	stages = append(stages, stage{StagePostStart, h.PostStart})
	if waitFor == StageInitialize {
		ready()
	}

	for _, st := range stages {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if f, err := runStage(ctx, r, st.name, st.cmds, log); err != nil {
			res.Failed = f
			return res, err
		}
		if st.name == waitFor {
			ready()
		}
	}
	// waitFor postAttachCommand (run per session): ready once all ran.
	ready()
	return res, nil
}

// RunStage runs one stage's commands in order (for postAttachCommand,
// once per SSH session that asks for it), logging like Run.
func RunStage(ctx context.Context, r Runner, name string, cmds []Command, log io.Writer) (*Failure, error) {
	return runStage(ctx, r, name, cmds, &lockedWriter{w: log})
}

func stageIndex(name string) int { return slices.Index(stageOrder, name) }

func origin(c Command) string {
	if c.Origin == "" {
		return "devcontainer.json"
	}
	return c.Origin
}

// lockedWriter serializes writes from commands running in parallel.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
