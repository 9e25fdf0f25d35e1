package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// svc is the layout of one sibling service: the same names as the
// environment's (upper, work, rootfs, run, runtime...) under svc/<name>.
func (l layout) svc(name string) layout { return layout{filepath.Join(l.dir, "svc", name)} }

// serviceLog is the file a sibling service's output goes to; the dev
// container sees it read-only under /.cove/log/services, where the agent's
// logs subsystem serves it (`cove env logs NAME --service SVC`).
func (l layout) serviceLog(name string) string {
	return filepath.Join(l.logDir(), "services", name+".log")
}

// svcID is the runtime id of a sibling service's container.
func svcID(envID, name string) string { return envID + "-" + name }

// Paths inside a sibling service's container.
const svcExitCode = agentRunDir + "/exit-code"

func (r *Runner) svcRootfs(lay layout, st *envState, s *svcState) image.RootfsConfig {
	sl := lay.svc(s.Name)
	return image.RootfsConfig{UpperDir: sl.upper(), WorkDir: sl.work(), LowerDir: sl.lower(), Target: sl.rootfs(), Layers: s.Layers, IDMap: st.IDMap}
}

// mountServices prepares every sibling's root filesystem (idempotent).
func (r *Runner) mountServices(ctx context.Context, lay layout, st *envState) error {
	if st.Compose == nil {
		return nil
	}
	for i := range st.Compose.Services {
		s := &st.Compose.Services[i]
		if !validServiceName(s.Name) { // a state written before names were checked
			return usererr.New("docker compose: invalid service name %q: rebuild the environment", s.Name)
		}
		if err := os.MkdirAll(lay.svc(s.Name).dir, 0o711); err != nil {
			return err
		}
		if err := image.MountRootfs(ctx, r.svcRootfs(lay, st, s)); err != nil {
			return fmt.Errorf("service %s: %w", s.Name, err)
		}
	}
	return nil
}

// unmountServices undoes mountServices.
func (r *Runner) unmountServices(ctx context.Context, lay layout, st *envState) error {
	if st == nil || st.Compose == nil {
		return nil
	}
	var errs []error
	for i := range st.Compose.Services {
		s := &st.Compose.Services[i]
		if err := image.UnmountRootfs(ctx, r.svcRootfs(lay, st, s)); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// stopServices stops the siblings, dependents first.
func (r *Runner) stopServices(ctx context.Context, envID string, st *envState) error {
	if st == nil || st.Compose == nil {
		return nil
	}
	var errs []error
	for _, s := range slices.Backward(st.Compose.Services) {
		if err := r.rt.Stop(ctx, svcID(envID, s.Name), r.cfg.StopGrace); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// deleteServices removes the siblings' containers.
func (r *Runner) deleteServices(ctx context.Context, envID string, st *envState) error {
	if st == nil || st.Compose == nil {
		return nil
	}
	var errs []error
	for _, s := range slices.Backward(st.Compose.Services) {
		if err := r.rt.Delete(ctx, svcID(envID, s.Name)); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// servicesStatus folds the siblings' state into the dev container's: an
// environment whose dev container is gone but whose services still run is
// "stopped" (so that stop, delete and start clean them up).
func (r *Runner) servicesStatus(ctx context.Context, envID string, st *envState, dev runtime.Status) (runtime.Status, error) {
	if st == nil || st.Compose == nil || (dev != runtime.StatusAbsent && dev != "") {
		return dev, nil
	}
	for _, s := range st.Compose.Services {
		cs, err := r.rt.State(ctx, svcID(envID, s.Name))
		if err != nil {
			return dev, err
		}
		if cs.Status != runtime.StatusAbsent {
			return runtime.StatusStopped, nil
		}
	}
	return dev, nil
}

// startServices starts the siblings that come before (before=true) or
// after the dev service in start order, each once its dependencies are
// satisfied. Running services are left alone.
func (r *Runner) startServices(ctx context.Context, env *covev1.Environment, lay layout, st *envState, netns string, before bool, note func(string)) error {
	cs := st.Compose
	if cs == nil {
		return nil
	}
	devAt := slices.Index(cs.Order, cs.DevService)
	for i, name := range cs.Order {
		if name == cs.DevService || (i < devAt) != before {
			continue
		}
		s, _ := cs.service(name)
		if err := r.waitDeps(ctx, env.Id, lay, st, s.Name, s.DependsOn, note); err != nil {
			return err
		}
		note("starting service " + s.Name)
		if err := r.startService(ctx, env, lay, st, s, netns); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runner) startService(ctx context.Context, env *covev1.Environment, lay layout, st *envState, s *svcState, netns string) error {
	id := svcID(env.Id, s.Name)
	cur, err := r.rt.State(ctx, id)
	if err != nil {
		return err
	}
	if cur.Status == runtime.StatusRunning {
		return nil
	}
	sl := lay.svc(s.Name)
	// The service's run directory (its exit code and agent log) belongs to
	// root inside the environment; the runner reads it through confine.
	if err := os.MkdirAll(sl.run(), 0o700); err != nil {
		return err
	}
	if err := os.Lchown(sl.run(), int(st.IDMap.HostID), int(st.IDMap.HostID)); err != nil {
		return err
	}
	if err := removeExitCode(sl); err != nil {
		return err
	}
	if err := os.MkdirAll(sl.etc(), 0o711); err != nil {
		return err
	}
	if err := r.keys.write(sl.etc(), id, st.IDMap.HostID); err != nil {
		return err
	}
	if err := os.MkdirAll(sl.runtime(), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(sl.hostname(), []byte(s.Hostname+"\n"), 0o644); err != nil {
		return err
	}
	if err := touchLog(lay.serviceLog(s.Name)); err != nil {
		return err
	}
	mounts := []runtime.Mount{
		{Source: r.cfg.AgentBinary, Destination: agentBinary, Type: "bind", Options: []string{"bind", "ro"}},
		{Source: sl.run(), Destination: agentRunDir, Type: "bind", Options: []string{"bind"}},
		{Source: sl.etc(), Destination: agentEtcDir, Type: "bind", Options: []string{"bind", "ro"}},
		{Source: lay.hosts(), Destination: "/etc/hosts", Type: "bind", Options: []string{"bind", "ro"}},
		{Source: sl.hostname(), Destination: "/etc/hostname", Type: "bind", Options: []string{"bind", "ro"}},
		{Source: lay.resolvConf(), Destination: "/etc/resolv.conf", Type: "bind", Options: []string{"bind", "ro"}},
	}
	stg, err := newStager(lay.workspace(), sl.mnt())
	if err != nil {
		return err
	}
	vols, err := r.volumeMounts(lay, st, s.Mounts, sl.rootfs(), stg)
	if err != nil {
		return fmt.Errorf("service %s: %w", s.Name, err)
	}
	user := cmp.Or(s.User, "root")
	workdir := cmp.Or(s.WorkingDir, "/")
	args := append([]string{agentBinary, "agent"}, agentListenArgs...)
	args = append(args, "--user", user, "--workdir", workdir,
		"--command-user", user, "--entrypoint-workdir", workdir,
		"--exit-with-command", "--exit-code-file", svcExitCode, "--log-file", agentRunDir+"/agent.log")
	for _, c := range s.Command {
		args = append(args, "--command", c)
	}
	spec := runtime.Spec{
		ID:       id,
		Hostname: s.Hostname,
		StateDir: sl.runtime(),
		Rootfs:   sl.rootfs(),
		IDMap:    st.IDMap,
		Process: runtime.Process{
			Args: args,
			Env:  append(withDefaultPath(s.Env), "COVE_ENVIRONMENT_ID="+env.Id, "COVE_ENVIRONMENT_NAME="+env.GetMetadata().GetName(), "COVE_SERVICE="+s.Name),
			Cwd:  "/",
		},
		Mounts:     append(mounts, vols...),
		Resources:  r.resources(env.GetSpec().GetClassId()),
		NetNSPath:  netns,
		Group:      env.Id,
		ConsoleLog: lay.serviceLog(s.Name),
	}
	if err := r.startContainer(ctx, spec, sl.agentSocket()); err != nil {
		return fmt.Errorf("service %s: %w", s.Name, err)
	}
	r.log.Info("service started", "env", env.Id, "service", s.Name)
	return nil
}

// volumeMounts turns volume, bind and tmpfs mounts into runtime mounts.
// Volumes are directories of the environment (they survive stop, start and
// rebuild; deleting the environment deletes them); a new volume starts
// with a copy of what the image has at its target, as Docker's do. Bind
// sources must still be where they were, inside the environment's
// workspace, with no symlink on the way (the environment owns that tree):
// they are staged from a descriptor (stg), never mounted by path.
func (r *Runner) volumeMounts(lay layout, st *envState, ms []dcMount, rootfs string, stg *stager) ([]runtime.Mount, error) {
	var out []runtime.Mount
	for _, m := range ms {
		opts := []string{"nosuid", "nodev"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		switch m.Type {
		case "tmpfs":
			out = append(out, runtime.Mount{Source: "tmpfs", Destination: m.Target, Type: "tmpfs", Options: append(opts, "mode=1777")})
		case "bind":
			rel, ok := workspaceRel(lay.workspace(), m.Source)
			if !ok {
				return nil, usererr.New("bind mount %s: only directories of the checkout can be mounted", m.Target)
			}
			src, err := stg.stage(rel, confine.Beneath, "bind mount "+m.Target)
			if err != nil {
				return nil, err
			}
			out = append(out, runtime.Mount{Source: src, Destination: m.Target, Type: "bind", Options: append(opts, "rbind")})
		default:
			dir, err := volumeDir(lay, m)
			if err != nil {
				return nil, err
			}
			if err := r.makeVolume(dir, st, rootfs, m.Target); err != nil {
				return nil, err
			}
			out = append(out, runtime.Mount{Source: dir, Destination: m.Target, Type: "bind", Options: append(opts, "rbind")})
		}
	}
	return out, nil
}

// makeVolume creates a volume's directory the first time, filled with what
// rootfs (a mounted, id-shifted root filesystem; "" for none) has at target.
// The image's content is resolved inside the root filesystem (a link never
// leads out of it) and copied through descriptors (confine).
func (r *Runner) makeVolume(dir string, st *envState, rootfs, target string) error {
	if dirExists(dir) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	tmp := dir + ".new"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	var src *confine.Dir
	if rootfs != "" {
		root, err := confine.OpenDir(rootfs)
		if err != nil {
			return err
		}
		src, _ = root.OpenDir(target, confine.InRoot) // nothing there: an empty volume
		root.Close()
	}
	if src != nil {
		defer src.Close()
		if err := confine.CopyTree(context.Background(), src, tmp, confine.CopyOptions{TolerateXattrErrors: true}); err != nil {
			return fmt.Errorf("volume %s: copy image content: %w", filepath.Base(dir), err)
		}
	} else {
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return err
		}
		if err := os.Chown(tmp, int(st.IDMap.HostID), int(st.IDMap.HostID)); err != nil {
			return err
		}
	}
	return os.Rename(tmp, dir)
}

// within reports whether p is root or below it.
func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}
