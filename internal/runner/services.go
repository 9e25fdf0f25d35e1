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

	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/treecopy"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"golang.org/x/sys/unix"
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

// exitCode is the file a service's agent records its command's exit code
// in (svcExitCode inside the service).
func (l layout) exitCode() string { return filepath.Join(l.run(), filepath.Base(svcExitCode)) }

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
	if err := os.MkdirAll(sl.run(), 0o700); err != nil {
		return err
	}
	if err := os.Chown(sl.run(), int(st.IDMap.HostID), int(st.IDMap.HostID)); err != nil {
		return err
	}
	for _, f := range []string{sl.socket(), sl.exitCode()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
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
		{Source: lay.etc(), Destination: agentEtcDir, Type: "bind", Options: []string{"bind", "ro"}},
		{Source: lay.hosts(), Destination: "/etc/hosts", Type: "bind", Options: []string{"bind", "ro"}},
		{Source: sl.hostname(), Destination: "/etc/hostname", Type: "bind", Options: []string{"bind", "ro"}},
		{Source: lay.resolvConf(), Destination: "/etc/resolv.conf", Type: "bind", Options: []string{"bind", "ro"}},
	}
	vols, err := r.volumeMounts(lay, st, s.Mounts, sl.rootfs())
	if err != nil {
		return fmt.Errorf("service %s: %w", s.Name, err)
	}
	user := cmp.Or(s.User, "root")
	workdir := cmp.Or(s.WorkingDir, "/")
	args := []string{agentBinary, "agent", "--socket", agentRunDir + "/agent.sock",
		"--authorized-keys", agentEtcDir + "/runner_keys", "--user", user, "--workdir", workdir,
		"--command-user", user, "--entrypoint-workdir", workdir,
		"--exit-with-command", "--exit-code-file", svcExitCode, "--log-file", agentRunDir + "/agent.log"}
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
	if err := r.rt.Start(ctx, spec); err != nil {
		return fmt.Errorf("service %s: %w", s.Name, err)
	}
	r.log.Info("service started", "env", env.Id, "service", s.Name)
	return nil
}

// volumeMounts turns volume, bind and tmpfs mounts into runtime mounts.
// Volumes are directories of the environment (they survive stop, start and
// rebuild; deleting the environment deletes them); a new volume starts
// with a copy of what the image has at its target, as Docker's do. Bind
// sources must still resolve to themselves inside the environment's
// workspace: the environment owns that tree and could have replaced a
// directory with a symlink to a host path since the compose files were
// read.
func (r *Runner) volumeMounts(lay layout, st *envState, ms []dcMount, rootfs string) ([]runtime.Mount, error) {
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
			real, err := filepath.EvalSymlinks(m.Source)
			if err != nil || real != m.Source || !within(lay.workspace(), real) {
				return nil, usererr.New("bind mount %s: its source %s changed (a symlink?) or is gone; only directories of the checkout can be mounted",
					m.Target, strings.TrimPrefix(m.Source, lay.workspace()))
			}
			out = append(out, runtime.Mount{Source: real, Destination: m.Target, Type: "bind", Options: append(opts, "rbind")})
		default:
			dir := volumeDir(lay, m)
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
	src := ""
	if rootfs != "" {
		// The image's content at target (resolved inside the rootfs, never
		// through a link out of it).
		if p, err := securePath(rootfs, target); err == nil && dirExists(p) {
			src = p
		}
	}
	if src != "" {
		if err := treecopy.Copy(context.Background(), src, tmp, treecopy.Options{TolerateXattrErrors: true}); err != nil {
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

// securePath resolves target inside root, following symlinks as if root
// were / (openat2 RESOLVE_IN_ROOT), and returns the host path it names.
func securePath(root, target string) (string, error) {
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rootFD)
	fd, err := unix.Openat2(rootFD, strings.TrimPrefix(filepath.Clean("/"+target), "/"), &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return "", &os.PathError{Op: "openat2", Path: target, Err: err}
	}
	defer unix.Close(fd)
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", err
	}
	if !within(root, p) {
		return "", fmt.Errorf("%s leaves the root filesystem", target)
	}
	return p, nil
}

// within reports whether p is root or below it.
func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}
