package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
)

// The environments: A is typed into, the others are its neighbours.
var envNames = []string{"a", "n1", "n2", "n3"}

// policy is a way of controlling the environments' CPU.
type policy struct {
	name string
	// apply sets it on the environments' cgroups (nil: leave cove's).
	apply func(cgroups []string) error
}

// measurement is one case's keystroke latencies, per client placement,
// and the CPU the environments used meanwhile.
type measurement struct {
	policy, load string
	by           map[string]*sample // by client placement (client.go)
	cpus         float64            // CPUs the four environments used together
	aCPUs        float64            // of which A
	// aThrottled is the share of CFS periods in which A's cgroup (its
	// shell's and agent's CPU) was throttled by its quota.
	aThrottled float64
}

// sample is the keystrokes typed with the client in one placement.
type sample struct {
	lat []time.Duration
	// waits is how long the processes of each role on the keystroke's
	// path waited for a CPU, in total (per keystroke: divide by len(lat)).
	waits map[string]time.Duration
}

// fixture is what every cove up session shares: the image, the repository
// and the cove binary.
type fixture struct {
	o                  options
	coveBin, imageRef  string
	repo, tmp, runRoot string
	modes              []string      // client placements measured (client.go)
	client             *clientPlacer // moves the client between them
	coveCgroups        []string      // where each session's cove up ran (its CPU cgroup)
}

func run(ctx context.Context, o options, out io.Writer) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root: cove's runner and runc need it")
	}
	if o.keys < 1 || o.spinners < 1 {
		return fmt.Errorf("-keys and -spinners must be at least 1")
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		return fmt.Errorf("the OpenSSH client (ssh) is needed: %w", err)
	}
	var cl benchkit.Cleanups
	defer cl.Run()
	if o.shield > 0 {
		undo, err := shieldSelf(o.shield)
		if err != nil {
			return err
		}
		cl.Add(undo) // runs last: after cove up and the ssh client are gone
	}
	modes, err := clientModes(o.client)
	if err != nil {
		return err
	}
	host, err := ownCPUCgroup() // the -shield cgroup, if any
	if err != nil {
		return err
	}
	placer, removeClient, err := newClientPlacer(modes, host)
	if err != nil {
		return err
	}
	cl.Add(removeClient)
	tmp, runRoot, err := benchkit.Workdir(&cl)
	if err != nil {
		return err
	}
	f := fixture{o: o, coveBin: o.cove, tmp: tmp, runRoot: runRoot, modes: modes, client: placer}
	in, err := benchkit.Prepare(ctx, tmp, o.cove, &cl)
	if err != nil {
		return err
	}
	f.coveBin, f.imageRef, f.repo = in.Cove, in.ImageRef, in.Repo
	mach := benchkit.MachineInfo(ctx, o.runc)

	cpus := 0.0 // the class's CPUs, read from the quota cove set
	none := policy{name: "no control (no CFS quota)", apply: func(cgs []string) error {
		for _, cg := range cgs {
			if err := benchkit.SetCPUQuota(cg, 0); err != nil {
				return err
			}
		}
		return nil
	}}
	static := policy{name: "static CFS quota (class CPUs)", apply: func(cgs []string) error {
		for _, cg := range cgs {
			if err := benchkit.SetCPUQuota(cg, cpus); err != nil {
				return err
			}
		}
		return nil
	}}
	control := hasControlFlag(ctx, f.coveBin)
	var plainArgs []string
	if control {
		// The loop is on by default: the first policies are measured
		// without it.
		plainArgs = []string{"--cpu-control=false"}
	}
	groups := hasFlag(ctx, f.coveBin, "--process-groups")
	if groups {
		// So are the process groups: the baselines share each
		// environment's CPU evenly among its processes.
		plainArgs = append(plainArgs, "--process-groups=false")
	}
	weighted := hasFlag(ctx, f.coveBin, "--runner-cpu-weight")
	if weighted {
		// And the runner's own weighted cgroup: the baselines are
		// cove without any of its CPU policies.
		plainArgs = append(plainArgs, "--runner-cpu-weight=0")
	}
	var ms []measurement
	var idle measurement
	if !o.baselines && !control {
		return fmt.Errorf("-baselines=false needs a cove with --cpu-control")
	}
	if o.baselines {
		if err := f.session(ctx, "plain", plainArgs, func(s *session) error {
			if cpus, err = s.classCPUs(); err != nil {
				return err
			}
			if idle, err = s.measure(ctx, static.name, "idle", 0); err != nil {
				return err
			}
			for _, p := range []policy{none, static} {
				if err := p.apply(s.cgroups); err != nil {
					return err
				}
				for _, load := range []int{1, len(envNames)} {
					m, err := s.measure(ctx, p.name, loadName(load), load)
					if err != nil {
						return err
					}
					ms = append(ms, m)
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}

	if control {
		controlArgs := []string{"--cpu-control=true"}
		if groups {
			controlArgs = append(controlArgs, "--process-groups=true")
		}
		err = f.session(ctx, "control", controlArgs, func(s *session) error {
			m, err := s.measure(ctx, controlName, "idle", 0)
			if err != nil {
				return err
			}
			if !o.baselines {
				// The ratios are to cove's own idle case.
				if cpus, err = s.classCPUs(); err != nil {
					return err
				}
				idle = m
			} else {
				ms = append(ms, m)
			}
			for _, load := range []int{1, len(envNames)} {
				m, err := s.measure(ctx, controlName, loadName(load), load)
				if err != nil {
					return err
				}
				ms = append(ms, m)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	mach.LoadEnd = benchkit.LoadAvg()
	printReport(out, mach, o, cpus, idle, ms, control, f.modes, f.coveCgroups)
	return nil
}

func loadName(envs int) string {
	if envs == 1 {
		return "A loaded"
	}
	return fmt.Sprintf("A + %d neighbours loaded", envs-1)
}

const controlName = "cove's control (--cpu-control, --process-groups)"

// hasControlFlag reports whether this cove's `cove up` has --cpu-control,
// cove's CPU control loop.
func hasControlFlag(ctx context.Context, bin string) bool { return hasFlag(ctx, bin, "--cpu-control") }

// hasFlag reports whether this cove's `cove up` has flag.
func hasFlag(ctx context.Context, bin, flag string) bool {
	out, _ := exec.CommandContext(ctx, bin, "up", "--help").CombinedOutput()
	return strings.Contains(string(out), flag)
}
