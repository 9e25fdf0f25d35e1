package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/usererr"
)

// svcID is the runtime id of a sibling service's container.
func svcID(envID, name string) string { return envID + "-" + name }

func svcRootfs(lay envdir.Layout, st *envState, s *envconfig.ServiceState) image.RootfsConfig {
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
		if !envconfig.ValidServiceName(s.Name) { // a state written before names were checked
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
