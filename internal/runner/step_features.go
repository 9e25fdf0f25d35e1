package runner

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/features"
	"github.com/covedev/cove/internal/guest"
	"github.com/covedev/cove/internal/runtime"
)

// featuresState is the features step's section.
type featuresState struct {
	// Installed: the features the image step staged are installed in the
	// container's file system.
	Installed bool `json:"installed,omitempty"`
	// InstalledPid is the container init the installation ran in;
	// RestartPending says its feature entrypoints have not run yet (the
	// restart step starts the container again for them).
	InstalledPid   int  `json:"installedPid,omitempty"`
	RestartPending bool `json:"restartPending,omitempty"`
	// FailedPid is the container init in which the installation failed:
	// the lifecycle commands do not run in it.
	FailedPid int `json:"failedPid,omitempty"`
	// Entered: users were let into this file system before the features
	// were installed in it (an installation failed), so whatever it holds
	// is theirs as much as the features': it is never cached as a layer
	// others start from. A rebuild starts a fresh file system.
	Entered bool `json:"entered,omitempty"`
}

// featuresPending reports whether st's features still need installing in
// the container (no cached layer had them).
func featuresPending(st *envState) bool {
	return st != nil && st.Image.DC != nil && st.Image.DC.FeaturesPending && !st.Features.Installed
}

// featuresStep installs pending features as root inside the running
// container; the result becomes a cached layer for the next environment
// of the same scope with the same image, features and options. A failing
// installation marks the devcontainer sub-status failed; the environment
// stays running and reachable so the user can fix it.
type featuresStep struct {
	rt     runtime.Runtime
	agents agentDialer
	// endpoint is how the dev container's agent is reached.
	endpoint func(envID string) agentclient.Endpoint
	// layer is where the features layer of a key is cached.
	layer func(key string) string
	gc    *gcLock
	log   *slog.Logger
}

func (f featuresStep) run(ctx context.Context, e *stepEnv) error {
	st := e.st
	if !featuresPending(st) {
		return nil
	}
	dc := st.Image.DC
	cs, err := f.rt.State(ctx, e.id())
	if err != nil {
		return err
	}
	if st.Features.FailedPid == cs.Pid && cs.Pid != 0 {
		return nil // failed in this container; the next start tries again
	}
	c, logf, err := agentAndLog(ctx, f.agents, f.endpoint, e)
	if err != nil {
		return err
	}
	defer logf.Close()
	e.rep.sub(subDevcontainer, subInProgress, "installing features")
	fmt.Fprintln(logf, "Installing features...")
	code, err := c.Exec(ctx, agentclient.ExecRequest{User: "root", Dir: "/", Shell: "sh " + guest.FeaturesInstallScript, Stdout: logf, Stderr: logf})
	if err != nil {
		return fmt.Errorf("install features: %w", err)
	}
	if code != 0 {
		st.Features.FailedPid, st.Features.Entered = cs.Pid, true
		e.rep.sub(subDevcontainer, subFailed, fmt.Sprintf("installing features failed with exit code %d (see `cove env logs %s`)", code, e.env.GetMetadata().GetName()))
		e.rep.ready()
		return nil
	}
	if st.Features.Entered {
		f.log.Info("features installed, not cached: users had this file system before", "env", e.id())
	} else if err := f.cache(e, dc.FeaturesKey); err != nil {
		f.log.Warn("features installed but not cached", "env", e.id(), "err", err)
	}
	st.Features = featuresState{Installed: true, InstalledPid: cs.Pid, RestartPending: len(dc.Entrypoints) > 0, Entered: st.Features.Entered}
	return nil
}

// cache snapshots the container's file system, which holds exactly the
// image and the features' installation, as the features layer of key.
func (f featuresStep) cache(e *stepEnv, key string) error {
	layer := f.layer(key)
	if err := os.MkdirAll(filepath.Dir(layer), 0o700); err != nil {
		return err
	}
	release := f.gc.use() // the snapshot's temporary directory (gc.go)
	defer release()
	return features.SnapshotLayer(e.lay.Upper(), layer, e.st.IDMap.HostID, snapshotExcludes)
}

// agentAndLog connects to the dev container's agent (pooled) and opens the
// lifecycle log, which commands run through the agent write to.
func agentAndLog(ctx context.Context, agents agentDialer, endpoint func(string) agentclient.Endpoint, e *stepEnv) (execer, *os.File, error) {
	c, err := agents.client(ctx, e.id(), endpoint(e.id()))
	if err != nil {
		return nil, nil, err
	}
	logf, err := os.OpenFile(e.lay.LogFile(), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, nil, err
	}
	return c, logf, nil
}
