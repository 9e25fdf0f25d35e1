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
	"time"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// svcID is the runtime id of a sibling service's container.
func svcID(envID, name string) string { return envID + "-" + name }

// Paths inside a sibling service's container.
const svcExitCode = agentRunDir + "/exit-code"

func svcRootfs(lay envdir.Layout, st *envState, s *svcState) image.RootfsConfig {
	sl := lay.Service(s.Name)
	return image.RootfsConfig{UpperDir: sl.Upper(), WorkDir: sl.Work(), LowerDir: sl.Lower(), Target: sl.Rootfs(), Layers: s.Layers, IDMap: st.IDMap}
}

// mountServices prepares every sibling's root filesystem (idempotent).
func mountServices(ctx context.Context, images imageStore, lay envdir.Layout, st *envState) error {
	if st.Image.Compose == nil {
		return nil
	}
	for i := range st.Image.Compose.Services {
		s := &st.Image.Compose.Services[i]
		if !validServiceName(s.Name) { // a state written before names were checked
			return usererr.New("docker compose: invalid service name %q: rebuild the environment", s.Name)
		}
		if err := os.MkdirAll(lay.Service(s.Name).Dir, 0o711); err != nil {
			return err
		}
		if err := images.mount(ctx, svcRootfs(lay, st, s)); err != nil {
			return fmt.Errorf("service %s: %w", s.Name, err)
		}
	}
	return nil
}

// unmountServices undoes mountServices.
func unmountServices(ctx context.Context, images imageStore, lay envdir.Layout, st *envState) error {
	if st == nil || st.Image.Compose == nil {
		return nil
	}
	var errs []error
	for i := range st.Image.Compose.Services {
		s := &st.Image.Compose.Services[i]
		if err := images.unmount(ctx, svcRootfs(lay, st, s)); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// stopServices stops the siblings, dependents first.
func stopServices(ctx context.Context, rt runtime.Runtime, grace time.Duration, envID string, st *envState) error {
	if st == nil || st.Image.Compose == nil {
		return nil
	}
	var errs []error
	for _, s := range slices.Backward(st.Image.Compose.Services) {
		if err := rt.Stop(ctx, svcID(envID, s.Name), grace); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// deleteServices removes the siblings' containers.
func deleteServices(ctx context.Context, rt runtime.Runtime, envID string, st *envState) error {
	if st == nil || st.Image.Compose == nil {
		return nil
	}
	var errs []error
	for _, s := range slices.Backward(st.Image.Compose.Services) {
		if err := rt.Delete(ctx, svcID(envID, s.Name)); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// servicesStatus folds the siblings' state into the dev container's: an
// environment whose dev container is gone but whose services still run is
// "stopped" (so that stop, delete and start clean them up).
func (r *Runner) servicesStatus(ctx context.Context, envID string, st *envState, dev runtime.Status) (runtime.Status, error) {
	if st == nil || st.Image.Compose == nil || (dev != runtime.StatusAbsent && dev != "") {
		return dev, nil
	}
	for _, s := range st.Image.Compose.Services {
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
func (m *startStep) startServices(ctx context.Context, env *covev1.Environment, lay envdir.Layout, st *envState, netns string, before bool, note func(string)) error {
	cs := st.Image.Compose
	if cs == nil {
		return nil
	}
	devAt := slices.Index(cs.Order, cs.DevService)
	for i, name := range cs.Order {
		if name == cs.DevService || (i < devAt) != before {
			continue
		}
		s, _ := cs.service(name)
		if err := m.waitDeps(ctx, env.Id, lay, st, s.Name, s.DependsOn, note); err != nil {
			return err
		}
		note("starting service " + s.Name)
		if err := m.startService(ctx, env, lay, st, s, netns); err != nil {
			return err
		}
	}
	return nil
}

func (m *startStep) startService(ctx context.Context, env *covev1.Environment, lay envdir.Layout, st *envState, s *svcState, netns string) error {
	id := svcID(env.Id, s.Name)
	cur, err := m.rt.State(ctx, id)
	if err != nil {
		return err
	}
	if cur.Status == runtime.StatusRunning {
		return nil
	}
	sl := lay.Service(s.Name)
	// The service's run directory (its exit code and agent log) belongs to
	// root inside the environment; the runner reads it through confine.
	if err := os.MkdirAll(sl.Run(), 0o700); err != nil {
		return err
	}
	if err := os.Lchown(sl.Run(), int(st.IDMap.HostID), int(st.IDMap.HostID)); err != nil {
		return err
	}
	if err := removeExitCode(sl); err != nil {
		return err
	}
	if err := os.MkdirAll(sl.Etc(), 0o711); err != nil {
		return err
	}
	if err := m.keys.write(sl.Etc(), id, st.IDMap.HostID); err != nil {
		return err
	}
	if err := os.MkdirAll(sl.Runtime(), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(sl.Hostname(), []byte(s.Hostname+"\n"), 0o644); err != nil {
		return err
	}
	if err := touchLog(lay.ServiceLog(s.Name)); err != nil {
		return err
	}
	mounts := []runtime.Mount{
		{Source: m.agentBinary, Destination: agentBinary, Type: "bind", Options: []string{"bind", "ro"}},
		{Source: sl.Run(), Destination: agentRunDir, Type: "bind", Options: []string{"bind"}},
		{Source: sl.Etc(), Destination: agentEtcDir, Type: "bind", Options: []string{"bind", "ro"}},
		{Source: lay.Hosts(), Destination: "/etc/hosts", Type: "bind", Options: []string{"bind", "ro"}},
		{Source: sl.Hostname(), Destination: "/etc/hostname", Type: "bind", Options: []string{"bind", "ro"}},
		{Source: lay.ResolvConf(), Destination: "/etc/resolv.conf", Type: "bind", Options: []string{"bind", "ro"}},
	}
	stg, err := newStager(lay.Workspace(), sl.Mnt())
	if err != nil {
		return err
	}
	vols, err := m.volumeMounts(lay, st, s.Mounts, sl.Rootfs(), stg)
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
		StateDir: sl.Runtime(),
		Rootfs:   sl.Rootfs(),
		IDMap:    st.IDMap,
		Process: runtime.Process{
			Args: args,
			Env:  append(withDefaultPath(s.Env), "COVE_ENVIRONMENT_ID="+env.Id, "COVE_ENVIRONMENT_NAME="+env.GetMetadata().GetName(), "COVE_SERVICE="+s.Name),
			Cwd:  "/",
		},
		Mounts:     append(mounts, vols...),
		Resources:  m.classes.resources(env.GetSpec().GetClassId()),
		NetNSPath:  netns,
		Group:      env.Id,
		ConsoleLog: lay.ServiceLog(s.Name),
	}
	if err := m.startContainer(ctx, spec, sl.AgentSocket()); err != nil {
		return fmt.Errorf("service %s: %w", s.Name, err)
	}
	m.log.Info("service started", "env", env.Id, "service", s.Name)
	return nil
}

// volumeMounts turns volume, bind and tmpfs mounts into runtime mounts.
// Volumes are directories of the environment (they survive stop, start and
// rebuild; deleting the environment deletes them); a new volume starts
// with a copy of what the image has at its target, as Docker's do. Bind
// sources must still be where they were, inside the environment's
// workspace, with no symlink on the way (the environment owns that tree):
// they are staged from a descriptor (stg), never mounted by path.
func (sp *startStep) volumeMounts(lay envdir.Layout, st *envState, ms []dcMount, rootfs string, stg *stager) ([]runtime.Mount, error) {
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
			rel, ok := workspaceRel(lay.Workspace(), m.Source)
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
			if err := makeVolume(dir, st, rootfs, m.Target); err != nil {
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
func makeVolume(dir string, st *envState, rootfs, target string) error {
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
