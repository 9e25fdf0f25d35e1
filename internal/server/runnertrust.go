package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// What the server accepts from a runner about itself. A runner's report is
// self-serving (a compromised runner would advertise whatever attracts
// environments), so it is bounded before it is stored or scheduled on.
const (
	// DefaultMaxRunnerEnvironments bounds a runner's maxEnvironments
	// unless the server's configuration says otherwise.
	DefaultMaxRunnerEnvironments = 256
	maxRunnerClasses             = 32
	maxRunnerRuntimes            = 8
	maxClassCPUs                 = 1024
	maxClassMemory               = 64 << 40 // 64 TiB
	maxClassDisk                 = 1 << 50  // 1 PiB
	maxClassPids                 = 1 << 22  // the kernel's pid_max limit
	maxEgressAllow               = 256
	maxCapString                 = 255
	maxProxyURLLen               = 2048
)

var (
	runtimeRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,31}$`)
	runnerNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,252})$`)
)

// checkCapabilities validates what a runner advertises and returns it with
// maxEnvironments 0 (no limit of its own) replaced by the server's bound.
func (s *Server) checkCapabilities(c *covev1.RunnerCapabilities) (*covev1.RunnerCapabilities, error) {
	if c == nil {
		c = &covev1.RunnerCapabilities{}
	}
	bound := s.cfg.MaxRunnerEnvironments
	if c.GetMaxEnvironments() < 0 || int(c.GetMaxEnvironments()) > bound {
		return nil, capErr("maxEnvironments", "%d is out of range: this server accepts 1-%d", c.GetMaxEnvironments(), bound)
	}
	if c.MaxEnvironments == 0 {
		c.MaxEnvironments = int32(bound)
	}
	if c.GetCpus() < 0 || c.GetMemoryBytes() < 0 || c.GetDiskBytes() < 0 {
		return nil, capErr("cpus, memoryBytes, diskBytes", "must not be negative")
	}
	if len(c.GetRuntimes()) > maxRunnerRuntimes {
		return nil, capErr("runtimes", "%d entries, at most %d", len(c.GetRuntimes()), maxRunnerRuntimes)
	}
	for i, r := range c.GetRuntimes() {
		if !runtimeRE.MatchString(r) {
			return nil, capErr(fmt.Sprintf("runtimes[%d]", i), "invalid runtime name %q", r)
		}
	}
	if len(c.GetClasses()) > maxRunnerClasses {
		return nil, capErr("classes", "%d classes, at most %d", len(c.GetClasses()), maxRunnerClasses)
	}
	seen := map[string]bool{}
	for i, cl := range c.GetClasses() {
		field := fmt.Sprintf("classes[%d]", i)
		if !classIDRE.MatchString(cl.GetId()) {
			return nil, capErr(field+".id", "invalid class id %q: lower-case letters, digits, '.', '_' and '-' (at most 63)", cl.GetId())
		}
		if seen[cl.GetId()] {
			return nil, capErr(field+".id", "class %q is listed twice", cl.GetId())
		}
		seen[cl.GetId()] = true
		if err := checkClassShape(field, cl); err != nil {
			return nil, err
		}
	}
	if a := c.GetSshAddress(); a != "" {
		host, port, err := net.SplitHostPort(a)
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil || n < 1 || n > 65535 || len(a) > maxCapString || !printable(host) {
			return nil, capErr("sshAddress", "%q is not HOST:PORT", a)
		}
	}
	if p := c.GetProxyUrl(); p != "" {
		if err := checkProxyURL(p); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func checkClassShape(field string, cl *covev1.EnvironmentClass) error {
	switch {
	case len(cl.GetDisplayName()) > maxCapString || !printable(cl.GetDisplayName()):
		return capErr(field+".displayName", "at most %d printable characters", maxCapString)
	case cl.GetCpus() < 0 || cl.GetCpus() > maxClassCPUs:
		return capErr(field+".cpus", "%d is out of range 0-%d", cl.GetCpus(), maxClassCPUs)
	case cl.GetMemoryBytes() < 0 || cl.GetMemoryBytes() > maxClassMemory:
		return capErr(field+".memoryBytes", "%d is out of range 0-%d", cl.GetMemoryBytes(), int64(maxClassMemory))
	case cl.GetDiskBytes() < 0 || cl.GetDiskBytes() > maxClassDisk:
		return capErr(field+".diskBytes", "%d is out of range 0-%d", cl.GetDiskBytes(), int64(maxClassDisk))
	case cl.GetPids() < 0 || cl.GetPids() > maxClassPids:
		return capErr(field+".pids", "%d is out of range 0-%d", cl.GetPids(), maxClassPids)
	case cl.GetCpuBurst() < 0 || cl.GetCpuBurst() > maxClassCPUs:
		return capErr(field+".cpuBurst", "%d is out of range 0-%d", cl.GetCpuBurst(), maxClassCPUs)
	case cl.GetMemoryHighPercent() < 0 || cl.GetMemoryHighPercent() > 100:
		return capErr(field+".memoryHighPercent", "%d is out of range 0-100", cl.GetMemoryHighPercent())
	case cl.GetSwapBytes() < -1 || cl.GetSwapBytes() > maxClassMemory:
		return capErr(field+".swapBytes", "%d is out of range -1-%d", cl.GetSwapBytes(), int64(maxClassMemory))
	case cl.GetIoReadBps() < 0 || cl.GetIoWriteBps() < 0 || cl.GetIoReadIops() < 0 || cl.GetIoWriteIops() < 0:
		return capErr(field+".io*", "IO limits must not be negative")
	case cl.GetRuntime() != "" && !runtimeRE.MatchString(cl.GetRuntime()):
		return capErr(field+".runtime", "invalid runtime name %q", cl.GetRuntime())
	case cl.GetMaxInactivitySeconds() < 0 || cl.GetMaxInactivitySeconds() > maxTimeoutSecs:
		return capErr(field+".maxInactivitySeconds", "%d is out of range 0-%d", cl.GetMaxInactivitySeconds(), maxTimeoutSecs)
	case cl.GetMaxLifetimeSeconds() < 0 || cl.GetMaxLifetimeSeconds() > maxTimeoutSecs:
		return capErr(field+".maxLifetimeSeconds", "%d is out of range 0-%d", cl.GetMaxLifetimeSeconds(), maxTimeoutSecs)
	case cl.GetMaxInactivitySeconds() > 0 && secs(cl.GetMaxInactivitySeconds()) < MinClassTimeoutCap:
		return capErr(field+".maxInactivitySeconds", "%d s is below this server's floor of %s (0: no cap): environments would stop seconds after they start", cl.GetMaxInactivitySeconds(), MinClassTimeoutCap)
	case cl.GetMaxLifetimeSeconds() > 0 && secs(cl.GetMaxLifetimeSeconds()) < MinClassTimeoutCap:
		return capErr(field+".maxLifetimeSeconds", "%d s is below this server's floor of %s (0: no cap): environments would stop seconds after they start", cl.GetMaxLifetimeSeconds(), MinClassTimeoutCap)
	case cl.GetEgressRateBits() < 0 || cl.GetIngressRateBits() < 0:
		return capErr(field+".egressRateBits, ingressRateBits", "must not be negative")
	case len(cl.GetEgressAllow()) > maxEgressAllow:
		return capErr(field+".egressAllow", "%d entries, at most %d", len(cl.GetEgressAllow()), maxEgressAllow)
	}
	switch cl.GetEgressPolicy() {
	case "", "allow-all", "deny-private", "allowlist":
	default:
		return capErr(field+".egressPolicy", "unknown policy %q (allow-all, deny-private or allowlist)", cl.GetEgressPolicy())
	}
	for j, e := range cl.GetEgressAllow() {
		if len(e) > 64 || !printable(e) {
			return capErr(fmt.Sprintf("%s.egressAllow[%d]", field, j), "%q is not CIDR or CIDR:PORT", e)
		}
	}
	return nil
}

// checkProxyURL accepts an http(s) base URL: a host, no credentials, query
// or fragment (the server sends browsers there).
func checkProxyURL(p string) error {
	u, err := url.Parse(p)
	if err != nil || len(p) > maxProxyURLLen || !printable(p) || (u.Scheme != "http" && u.Scheme != "https") ||
		u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || (u.Path != "" && u.Path != "/") {
		return capErr("proxyUrl", "%q is not an http(s) base URL like https://runner1:7743", p)
	}
	return nil
}

func printable(s string) bool { return strings.IndexFunc(s, unicode.IsControl) < 0 }

func capErr(field, format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("runner capabilities: %s: %s", field, fmt.Sprintf(format, args...)))
}

// RotateRunnerToken gives the calling runner a new token. The old one keeps
// working until the new one is first used (so a lost answer does not lock
// the runner out), then stops.
func (r *runnerService) RotateRunnerToken(ctx context.Context, _ *connect.Request[covev1.RotateRunnerTokenRequest]) (*connect.Response[covev1.RotateRunnerTokenResponse], error) {
	rn, err := runnerFrom(ctx)
	if err != nil {
		return nil, err
	}
	tok := NewToken(prefixRunnerToken)
	if err := r.s.store.SetRunnerNextToken(ctx, rn.ID, HashToken(tok)); err != nil {
		return nil, err
	}
	r.s.log.Info("runner token rotated", "runner", rn.ID, "name", rn.Name)
	return connect.NewResponse(&covev1.RotateRunnerTokenResponse{RunnerToken: tok}), nil
}

// DeleteRunner removes a runner: its tokens stop working at once, and its
// environments become stopped and unassigned (their files stay on that
// host; started again, they run elsewhere from their source).
func (r *runnerService) DeleteRunner(ctx context.Context, req *connect.Request[covev1.DeleteRunnerRequest]) (*connect.Response[covev1.DeleteRunnerResponse], error) {
	u, err := requireOwner(ctx)
	if err != nil {
		return nil, err
	}
	rn, err := r.s.findRunner(ctx, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	// Revoke first: if anything below fails, the runner is already out, and
	// running the removal again finishes it.
	if err := r.s.store.RevokeRunnerTokens(ctx, rn.ID); err != nil {
		return nil, fmt.Errorf("revoke runner tokens: %w", err)
	}
	envs, err := r.s.store.ListEnvironments(ctx, store.EnvironmentFilter{RunnerID: rn.ID})
	if err != nil {
		return nil, err
	}
	out := &covev1.DeleteRunnerResponse{}
	msg := fmt.Sprintf("runner %q was removed: this environment's files stay on that host. Start it to run it on another runner (from its latest backup, or from its source if it has none), or delete it.", rn.Name)
	for _, env := range envs {
		if _, err := r.s.store.UpdateEnvironment(ctx, env.Id, func(e *covev1.Environment) error {
			releaseEnvironment(e, msg)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("release environment %s: %w", env.Id, err)
		}
		out.ReleasedEnvironmentIds = append(out.ReleasedEnvironmentIds, env.Id)
	}
	if err := r.s.store.DeleteRunner(ctx, rn.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	r.s.log.Warn("runner removed", "runner", rn.ID, "name", rn.Name, "by", u.Name, "released", len(out.ReleasedEnvironmentIds))
	return connect.NewResponse(out), nil
}

// releaseEnvironment detaches e from a runner that is gone: a pending
// delete completes, anything else ends stopped, with msg saying why.
func releaseEnvironment(e *covev1.Environment, msg string) {
	e.Metadata.RunnerId = ""
	if e.GetSpec().GetDesiredPhase() == phaseDeleted {
		e.Status.Phase = phaseDeleted
		e.Status.FailureMessage = ""
	} else {
		e.Spec.DesiredPhase = phaseStopped
		e.Spec.SpecVersion++
		e.Status.Phase = phaseStopped
		e.Status.FailureMessage = msg
	}
	e.Status.Ssh = nil
	e.Status.Ports = nil
	e.Status.ObservedSpecVersion = e.Spec.SpecVersion
	e.Status.StatusVersion++
}

// findRunner finds a runner by id, or by name if exactly one has it.
func (s *Server) findRunner(ctx context.Context, idOrName string) (store.Runner, error) {
	if idOrName == "" {
		return store.Runner{}, connect.NewError(connect.CodeInvalidArgument, errors.New("runner id or name is required"))
	}
	rn, err := s.store.GetRunner(ctx, idOrName)
	if err == nil || !errors.Is(err, store.ErrNotFound) {
		return rn, err
	}
	runners, err := s.store.ListRunners(ctx)
	if err != nil {
		return store.Runner{}, err
	}
	var found []store.Runner
	for _, r := range runners {
		if r.Name == idOrName {
			found = append(found, r)
		}
	}
	switch len(found) {
	case 0:
		return store.Runner{}, connect.NewError(connect.CodeNotFound, fmt.Errorf("runner %q not found (see `cove runner list`)", idOrName))
	case 1:
		return found[0], nil
	}
	return store.Runner{}, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%d runners are named %q: give the id (see `cove runner list`)", len(found), idOrName))
}
