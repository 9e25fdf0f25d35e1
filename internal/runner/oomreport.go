package runner

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/termsafe"
)

// oomLoop reports every process the kernel kills for lack of memory in an
// environment: a line in the environment's log (`cove env logs`) and a
// warning in the runner's, e.g. "dd was killed: out of memory at 4 GB".
// The count is in status.usage (usage.go). Without /dev/kmsg (not root,
// or a kernel log the runner may not read) only the count is reported.
func (r *Runner) oomLoop(ctx context.Context) {
	w, err := resources.OpenOOMKills()
	if err != nil {
		r.log.WarnContext(ctx, "out-of-memory kills will be counted but not named", "err", err)
		return
	}
	if err := w.Watch(ctx, r.reportOOMKill); err != nil {
		r.log.WarnContext(ctx, "out-of-memory kills will be counted but no longer named", "err", err)
	}
}

// oomMessage says that task was killed at limit bytes (0: unknown). The
// name is the process's own choice: it is made safe to print.
func oomMessage(task string, limit int64) string {
	msg := termsafe.Line(task) + " was killed: out of memory"
	if limit > 0 {
		msg += " at " + devcontainer.HumanBytes(limit)
	}
	return msg
}

// reportOOMKill reports k if it happened in one of this runner's
// environments. Its cgroup is /<cgroup parent>/<env id>[/<container>...]:
// the first element that names an environment is the one (the elements
// after it may be named inside the environment).
func (r *Runner) reportOOMKill(k resources.OOMKill) {
	id := ""
	var w *worker
	r.mu.Lock()
	for _, el := range strings.Split(strings.Trim(k.Cgroup, "/"), "/") {
		if w = r.workers[el]; w != nil {
			id = el
			break
		}
	}
	r.mu.Unlock()
	if w == nil {
		return
	}
	limit, err := resources.MemoryLimit(k.Cgroup)
	if err != nil {
		limit = 0 // the cgroup may be gone already
	}
	msg := oomMessage(k.Task, limit)
	r.log.Warn("out of memory in an environment", "env", id, "pid", k.PID, "msg", msg)
	w.noteOOMKill(msg, time.Now()) // status.usage (usage.go)
	// The log the agent serves (`cove env logs`), made if no lifecycle
	// command wrote it yet; not its directory: an environment without one
	// was not started, or is being deleted.
	f, err := os.OpenFile(r.layout(id).LogFile(), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %s\n", time.Now().UTC().Format(time.RFC3339), msg)
}
