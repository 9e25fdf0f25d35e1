package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/guest"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/usererr"
)

// start starts the environment's machines (envconfig.Machines: the dev
// container and, for a Compose configuration, its sibling services) in
// start order, each once what it depends on is satisfied. Running ones are
// left alone. note reports progress.
func (m *startStep) start(ctx context.Context, e *stepEnv, note func(string)) error {
	env, lay, st := e.env, e.lay, e.st
	if err := protectEnvDir(lay, st); err != nil { // also for directories made by older runners
		return err
	}
	att, err := m.net.attach(ctx, e)
	if err != nil {
		return err
	}
	machines, err := envconfig.Machines(identity(env, st), &st.Image, envconfig.Options{
		Class:     m.classes.resolution(env.GetSpec().GetClassId(), devcontainer.Allow{}), // sizes only
		Networked: att.netns != "", FeaturesInstalled: st.Features.Installed})
	if err != nil {
		return err
	}
	compose := st.Image.Compose != nil
	for _, mc := range machines {
		if compose {
			if err := m.waitDeps(ctx, env.Id, lay, st, mc.Service, mc.DependsOn, note); err != nil {
				return err
			}
			if mc.Dev {
				note("starting")
			} else {
				note("starting service " + mc.Service)
			}
		}
		if err := m.startMachine(ctx, e, mc, att.netns); err != nil {
			if mc.Dev {
				return err
			}
			return fmt.Errorf("service %s: %w", mc.Service, err)
		}
	}
	return nil
}

// startMachine prepares the host files of machine mc and starts it unless
// it runs already.
func (m *startStep) startMachine(ctx context.Context, e *stepEnv, mc envconfig.Machine, netns string) error {
	lay, st := e.lay, e.st
	cur, err := m.rt.State(ctx, mc.ID)
	if err != nil {
		return err
	}
	if cur.Status == runtime.StatusRunning {
		return nil // its agent keeps the socket it was given
	}
	ml := lay // the machine's own directories
	if !mc.Dev {
		ml = lay.Service(mc.Service)
		// The service's run directory (its exit code and agent log)
		// belongs to root inside the environment; the runner reads it
		// through confine.
		if err := os.MkdirAll(ml.Run(), 0o700); err != nil {
			return err
		}
		if err := os.Lchown(ml.Run(), int(st.IDMap.HostID), int(st.IDMap.HostID)); err != nil {
			return err
		}
		if err := removeExitCode(ml); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(ml.Etc(), 0o711); err != nil {
		return err
	}
	if err := os.WriteFile(ml.Hostname(), []byte(mc.Hostname+"\n"), 0o644); err != nil {
		return err
	}
	if mc.Dev {
		if hosts := mc.HostsText(); hosts != "" {
			if err := appendFile(lay.Hosts(), hosts); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(lay.Etc(), guest.PostAttachName), mc.PostAttach, 0o644); err != nil {
			return err
		}
		if err := writeRemoteEnv(lay.Etc(), mc.RemoteEnv, st.IDMap.HostID); err != nil {
			return err
		}
		if err := os.MkdirAll(lay.LogDir(), 0o755); err != nil {
			return err
		}
	}
	if err := m.keys.write(ml.Etc(), mc.ID, st.IDMap.HostID); err != nil {
		return err
	}
	if err := os.MkdirAll(ml.Runtime(), 0o700); err != nil {
		return err
	}
	spec := runtime.Spec{
		ID:        mc.ID,
		Hostname:  mc.Hostname,
		StateDir:  ml.Runtime(),
		Rootfs:    ml.Rootfs(),
		IDMap:     st.IDMap,
		Process:   runtime.Process{Args: mc.Process.Args, Env: mc.Process.Env, Cwd: mc.Process.Cwd},
		Resources: withDiskIO(m.limits.resources(e.env.GetSpec().GetClassId(), mc.Resources), lay), // disk.go
		NetNSPath: netns,
		Group:     mc.Group,
	}
	if mc.Service != "" {
		// A Compose machine's output (the dev service's too) is a service
		// log, which the agent serves.
		spec.ConsoleLog = lay.ServiceLog(mc.Service)
		if err := touchLog(spec.ConsoleLog); err != nil {
			return err
		}
	}
	stg, err := m.stager(lay.Workspace(), ml.Mnt())
	if err != nil {
		return err
	}
	if spec.Mounts, err = m.hostMounts(lay, ml, st, mc.Mounts, stg); err != nil {
		return err
	}
	ln, err := listenAgent(ml.AgentSocket())
	if err != nil {
		return err
	}
	defer ln.Close()
	spec.ExtraFiles = []*os.File{ln}
	if err := m.rt.Start(ctx, spec); err != nil {
		return err
	}
	if !mc.Dev {
		m.log.Info("service started", "env", e.id(), "service", mc.Service)
	}
	return nil
}

// hostMounts gives each described mount its host source: the runner's
// files for the machine (ml), the environment's shared ones (lay), volumes
// (directories of the environment that survive stop, start and rebuild; a
// new one starts with a copy of what the image has at its target, as
// Docker's do) and binds of the checkout, which must still be where they
// were inside the workspace with no symlink on the way (the environment
// owns that tree): they are staged from a descriptor (stg), never mounted
// by path.
func (m *startStep) hostMounts(lay, ml envdir.Layout, st *envState, ms []envconfig.Mount, stg binder) ([]runtime.Mount, error) {
	out := make([]runtime.Mount, 0, len(ms))
	for _, d := range ms {
		src := ""
		switch d.Kind {
		case envconfig.MountAgentBinary:
			src = m.agentBinary
		case envconfig.MountEtc:
			src = ml.Etc()
		case envconfig.MountRun:
			src = ml.Run()
		case envconfig.MountWorkspace:
			src = lay.Workspace()
		case envconfig.MountHosts:
			src = lay.Hosts()
		case envconfig.MountHostname:
			src = ml.Hostname()
		case envconfig.MountResolvConf:
			src = lay.ResolvConf()
		case envconfig.MountLog:
			src = lay.LogDir()
		case envconfig.MountFeatures:
			src = lay.Features()
		case envconfig.MountTmpfs:
			src = d.Source
		case envconfig.MountCheckout:
			s, err := stg.stage(st.Content.RepoName, confine.Beneath, "workspaceMount")
			if err != nil {
				return nil, err
			}
			src = s
		case envconfig.MountBind:
			rel, ok := workspaceRel(lay.Workspace(), d.Source)
			if !ok {
				return nil, usererr.New("bind mount %s: only directories of the checkout can be mounted", d.Target)
			}
			s, err := stg.stage(rel, confine.Beneath, "bind mount "+d.Target)
			if err != nil {
				return nil, err
			}
			src = s
		case envconfig.MountVolume:
			dir, err := volumeDir(lay, envconfig.ConfigMount{Type: "volume", Source: d.Source, Target: d.Target})
			if err != nil {
				return nil, err
			}
			if err := makeVolume(dir, st, ml.Rootfs(), d.Target); err != nil {
				return nil, err
			}
			src = dir
		default:
			return nil, fmt.Errorf("mount %s: unknown kind %q", d.Target, d.Kind)
		}
		out = append(out, runtime.Mount{Source: src, Destination: d.Target, Type: d.Type, Options: d.Options})
	}
	return out, nil
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// consoleLog is where the environment's dev container writes its output.
func consoleLog(lay envdir.Layout, st *envState) string {
	if st != nil && st.Image.Compose != nil {
		return lay.ServiceLog(st.Image.Compose.DevService)
	}
	return lay.ConsoleLog()
}

// touchLog creates a log file the runtime appends to, readable by the
// environment's agent (the environment's root, not the host's), which
// serves it.
func touchLog(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}
