package runner

import (
	"context"
	"errors"
	"os"
	"strings"

	"github.com/covedev/cove/internal/envdir"
)

// sweep runs once at the runner's start, before any environment is
// reconciled: it lists the runtime's containers and removes those an
// environment of this runner names but no longer owns (a sibling service
// dropped from its Compose file while the runner was away, a service of an
// environment whose directory is gone half-way through its removal).
// Containers it cannot attribute to an environment directory of this
// runner are left alone and logged: they may be another runner's sharing
// the runtime's state directory. Environments the runner owns are adopted
// by their workers, as before.
func (r *Runner) sweep(ctx context.Context) error {
	ids, err := r.rt.List(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		owner, service, ok := r.ownerOf(id)
		if !ok {
			r.log.Warn("container belongs to no environment of this runner; left alone (is --runc-root shared?)", "container", id)
			continue
		}
		if r.owns(owner, service) {
			continue
		}
		r.log.Warn("removing a container its environment no longer owns", "container", id, "env", owner)
		if err := errors.Join(r.rt.Stop(ctx, id, r.cfg.StopGrace), r.rt.Delete(ctx, id)); err != nil {
			r.log.Error("sweep", "container", id, "err", err)
		}
	}
	r.sweepDisks() // disk.go
	return nil
}

// ownerOf finds the environment directory container id belongs to: the
// environment's own (id) or a sibling service's (<env id>-<service>).
func (r *Runner) ownerOf(id string) (env, service string, ok bool) {
	if dirExists(r.layout(id).Dir) {
		return id, "", true
	}
	for i := strings.IndexByte(id, '-'); i > 0; i = next(id, i) {
		if dirExists(r.layout(id[:i]).Dir) {
			return id[:i], id[i+1:], true
		}
	}
	return "", "", false
}

func next(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '-')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// owns reports whether environment env's state names its service (""
// for the environment's own container). An unreadable state owns
// everything: nothing of it is touched.
func (r *Runner) owns(env, service string) bool {
	var st envState
	err := envdir.Load(r.layout(env).State(), &st)
	if errors.Is(err, os.ErrNotExist) {
		return service == "" // prepared but not yet recorded: its own container only
	}
	if err != nil || service == "" {
		return true
	}
	if st.Image.Compose == nil {
		return false
	}
	_, ok := st.Image.Compose.Service(service)
	return ok
}
