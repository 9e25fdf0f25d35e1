package runner

import (
	"github.com/covedev/cove/internal/runtime"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// observed is what exists on the host for one environment.
type observed struct {
	stateExists   bool
	contentReady  bool
	imageReady    bool
	rootfsMounted bool // every root file system (the services' too)
	someMounted   bool // at least one
	container     runtime.Status
	agentReady    bool
	// rebuild: the spec asks for a newer build generation than the one the
	// container's file system was built from.
	rebuild bool
	// devcontainerDone: features and lifecycle ran for the running container.
	devcontainerDone bool
	// diskMounted: the environment's disk is mounted; diskDown: it has one
	// (disk.go) that is not.
	diskMounted, diskDown bool
	// backup: a stop (or `cove env backup` while stopped) has a backup
	// to take; restore: spec.restore asks for a restore not yet done
	// (step_backup.go). salvage: a released copy to delete holds content
	// that may be in no recorded backup (step_salvage.go).
	backup, restore, salvage bool
}

type step string

const (
	stepPrepare         step = "prepare"          // allocate a uid range, make dirs, write state
	stepClone           step = "clone"            // content into /workspaces
	stepImage           step = "image"            // read devcontainer.json, pull the image
	stepMount           step = "mount"            // overlay rootfs
	stepStart           step = "start"            // runtime start
	stepWaitAgent       step = "wait-agent"       // agent answers SSH on its socket
	stepStop            step = "stop"             // SIGTERM, then SIGKILL after the grace period
	stepDeleteContainer step = "delete-container" // runtime state and cgroup
	stepUnmount         step = "unmount"          // overlay and idmapped layers
	stepRemove          step = "remove"           // all disk state; release the uid range
	stepReset           step = "reset"            // discard the container file system (upper dir), keep /workspaces
	stepFeatures        step = "features"         // install features, cache them as a layer
	stepRestart         step = "restart"          // start again for feature entrypoints
	stepLifecycle       step = "lifecycle"        // run lifecycle commands
	stepDisk            step = "disk"             // mount the environment's disk
	stepUnmountDisk     step = "unmount-disk"     // unmount it (its loop device goes with it)
	stepBackup          step = "backup"           // back up the stopped environment (step_backup.go)
	stepRestore         step = "restore"          // replace its content with a backup's (step_restore.go)
	stepSalvage         step = "salvage"          // back a released copy up before deleting it (step_salvage.go)
)

// devcontainerSteps follow a start (each does nothing when it has nothing
// to do): features, the restart their entrypoints need, lifecycle
// commands.
var devcontainerSteps = []step{stepFeatures, stepRestart, stepLifecycle}

// plan computes the steps that take o to desired. It is pure: the
// reconciler observes, plans, applies, and observes again.
func plan(desired covev1.EnvironmentPhase, o observed) []step {
	var steps []step
	live := o.container == runtime.StatusRunning || o.container == runtime.StatusCreated || o.container == runtime.StatusPaused
	switch desired {
	case covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING:
		if o.restore {
			return planRestore(o, live)
		}
		if o.stateExists && o.rebuild {
			if live {
				steps = append(steps, stepStop)
			}
			if o.container != runtime.StatusAbsent && o.container != "" {
				steps = append(steps, stepDeleteContainer)
			}
			if o.someMounted {
				steps = append(steps, stepUnmount)
			}
			if o.diskDown {
				steps = append(steps, stepDisk)
			}
			steps = append(steps, stepReset)
			if !o.contentReady {
				steps = append(steps, stepClone)
			}
			return append(append(steps, stepImage, stepMount, stepStart, stepWaitAgent), devcontainerSteps...)
		}
		if !o.stateExists {
			steps = append(steps, stepPrepare)
		}
		if o.diskDown {
			steps = append(steps, stepDisk) // everything after writes on it
		}
		if !o.contentReady {
			steps = append(steps, stepClone)
		}
		if !o.imageReady {
			steps = append(steps, stepImage)
		}
		if o.container == runtime.StatusRunning {
			if !o.agentReady {
				steps = append(steps, stepWaitAgent)
			}
			if !o.devcontainerDone {
				steps = append(steps, devcontainerSteps...)
			}
			return steps
		}
		if o.container != runtime.StatusAbsent && o.container != "" {
			// created-but-not-started, paused or exited: start afresh.
			steps = append(steps, stepStop, stepDeleteContainer)
		}
		if !o.rootfsMounted {
			steps = append(steps, stepMount)
		}
		return append(append(steps, stepStart, stepWaitAgent), devcontainerSteps...)
	case covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED:
		if live {
			steps = append(steps, stepStop)
		}
		if o.container != runtime.StatusAbsent && o.container != "" {
			steps = append(steps, stepDeleteContainer)
		}
		diskMounted := o.diskMounted
		if desired == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED && o.backup && o.stateExists {
			// Before unmounting: the backup reads the disk.
			if o.diskDown {
				steps, diskMounted = append(steps, stepDisk), true
			}
			steps = append(steps, stepBackup)
		}
		if desired == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED && o.salvage && o.stateExists {
			// Before unmounting and removing: nothing is deleted that
			// is in no recorded backup.
			if o.diskDown {
				steps, diskMounted = append(steps, stepDisk), true
			}
			steps = append(steps, stepSalvage)
		}
		if o.someMounted {
			steps = append(steps, stepUnmount)
		}
		if diskMounted {
			steps = append(steps, stepUnmountDisk)
		}
		if desired == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED && o.stateExists {
			steps = append(steps, stepRemove)
		}
	}
	return steps
}

// planRestore: stop and unmount what runs, restore the content, then
// start as after a create (the image step reads the restored
// devcontainer.json when this runner has no image for it yet).
func planRestore(o observed, live bool) []step {
	var steps []step
	if live {
		steps = append(steps, stepStop)
	}
	if o.container != runtime.StatusAbsent && o.container != "" {
		steps = append(steps, stepDeleteContainer)
	}
	if o.someMounted {
		steps = append(steps, stepUnmount)
	}
	if !o.stateExists {
		steps = append(steps, stepPrepare)
	}
	if o.diskDown {
		steps = append(steps, stepDisk)
	}
	steps = append(steps, stepRestore)
	if !o.imageReady {
		steps = append(steps, stepImage)
	}
	return append(append(steps, stepMount, stepStart, stepWaitAgent), devcontainerSteps...)
}
