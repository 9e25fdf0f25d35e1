package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/features"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// Paths inside every environment for devcontainer support.
const (
	featuresDir = "/.cove/features"
	logDir      = "/.cove/log"
)

// dcState is what the runner resolved from devcontainer.json (with image and
// feature metadata merged), persisted with the environment.
type dcState struct {
	ConfigPath      string `json:"configPath,omitempty"` // relative to the repository
	WorkspaceFolder string `json:"workspaceFolder,omitempty"`
	// MountTarget is where the repository appears (workspaceMount's target),
	// besides /workspaces/<repo>.
	MountTarget string `json:"mountTarget,omitempty"`
	// Mounts are devcontainer volume and tmpfs mounts: environment-local.
	Mounts []dcMount `json:"mounts,omitempty"`
	// Ports are forwardPorts and portsAttributes.
	Ports dcPorts `json:"ports,omitempty"`
	// Feature entrypoints (install order) and, when overrideCommand is
	// false, the image's ENTRYPOINT+CMD: the agent starts them.
	Entrypoints []string `json:"entrypoints,omitempty"`
	Command     []string `json:"command,omitempty"`
	WorkingDir  string   `json:"workingDir,omitempty"`
	// From runArgs' safe subset.
	Hostname        string          `json:"hostname,omitempty"`
	AddHosts        []string        `json:"addHosts,omitempty"`
	RemoteUser      string          `json:"remoteUser,omitempty"`
	ContainerEnv    []string        `json:"containerEnv,omitempty"` // KEY=VALUE, expanded
	RemoteEnv       []string        `json:"remoteEnv,omitempty"`
	UserEnvProbe    string          `json:"userEnvProbe,omitempty"`
	Hooks           lifecycle.Hooks `json:"hooks"`
	FeaturesKey     string          `json:"featuresKey,omitempty"`
	FeaturesPending bool            `json:"featuresPending,omitempty"` // install at the next start, then cache
	CreatedDone     bool            `json:"createdDone,omitempty"`
	// LifecyclePid is the container init the lifecycle last ran for, so a
	// restarted runner does not run postStartCommand again.
	LifecyclePid   int      `json:"lifecyclePid,omitempty"`
	Warnings       []string `json:"warnings,omitempty"`
	Extensions     []string `json:"extensions,omitempty"`
	Customizations string   `json:"customizations,omitempty"`
}

// dcPorts are devcontainer.json's port settings.
type dcPorts struct {
	Forward []int                  `json:"forward,omitempty"`
	Attrs   map[string]dcPortAttrs `json:"attrs,omitempty"` // by port or range "3000-3005"
	Other   *dcPortAttrs           `json:"other,omitempty"`
}

type dcPortAttrs struct {
	Label         string `json:"label,omitempty"`
	OnAutoForward string `json:"onAutoForward,omitempty"`
}

func (d *dcPorts) forwardPorts() []int {
	if d == nil {
		return nil
	}
	return d.Forward
}

// decorate sets p's label and onAutoForward from portsAttributes.
func (d *dcPorts) decorate(p *covev1.Port) {
	if d == nil {
		return
	}
	p.Forwarded = slices.Contains(d.Forward, int(p.Port))
	a := d.Other
	for pat, attrs := range d.Attrs {
		lo, hi, isRange := strings.Cut(pat, "-")
		l, err1 := strconv.Atoi(lo)
		h := l
		var err2 error
		if isRange {
			h, err2 = strconv.Atoi(hi)
		}
		if err1 == nil && err2 == nil && int(p.Port) >= l && int(p.Port) <= h {
			a = &attrs
			break
		}
	}
	if a != nil {
		p.Label, p.OnAutoForward = a.Label, a.OnAutoForward
	}
}

// dcMount is a volume (environment-local directory) or tmpfs mount.
type dcMount struct {
	Type     string `json:"type"`
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// allow is what a class permits of privileged devcontainer settings: no
// privileged mode, and the capabilities a container has anyway.
func (r *Runner) allow(class string) devcontainer.Allow {
	return devcontainer.Allow{Build: r.cfg.Buildkitd != "", Capabilities: []string{"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW",
		"SETGID", "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}}
}

// resolveDevcontainer reads the repository's devcontainer.json (nil, nil if
// it has none) and returns the image it names.
func (r *Runner) loadDevcontainer(env *covev1.Environment, repoDir string) (*devcontainer.Config, []devcontainer.Warning, error) {
	return devcontainer.Load(repoDir, env.GetSpec().GetDevcontainerPath(), devcontainer.LoadOptions{
		LocalWorkspaceFolder: repoDir, DevcontainerID: env.Id, Allow: r.allow(env.GetSpec().GetClassId()),
		LocalEnv: map[string]string{}, // the environment's own variables (secrets come later), never the runner's
	})
}

// applyDevcontainer merges image and feature metadata into cfg, checks the
// result, prepares features (cached layer, or an install at first start)
// and records everything in st.
func (r *Runner) applyDevcontainer(ctx context.Context, env *covev1.Environment, lay layout, st *envState, cfg *devcontainer.Config, warns []devcontainer.Warning, img *image.Image) error {
	repoDir := filepath.Join(lay.workspace(), st.RepoName)
	dc := &dcState{WorkspaceFolder: workspaces + "/" + st.RepoName}
	for _, w := range warns {
		dc.Warnings = append(dc.Warnings, fmt.Sprint(w))
	}
	st.DC = dc
	if cfg == nil {
		return nil
	}
	if rel, err := filepath.Rel(repoDir, cfg.Path); err == nil {
		dc.ConfigPath = rel
	}
	if cfg.Workspace.WorkspaceFolder != "" {
		dc.WorkspaceFolder = cfg.Workspace.WorkspaceFolder
	}
	if t := cfg.Workspace.MountTarget; t != "" && t != workspaces+"/"+st.RepoName {
		dc.MountTarget = t
	}
	imageEntries, err := devcontainer.ParseImageMetadata(img.Config.Labels["devcontainer.metadata"])
	if err != nil {
		return usererr.Wrap(err, "image %s: devcontainer.metadata label: %v", st.Image, err)
	}
	var refs []features.Ref
	for _, f := range cfg.Features {
		refs = append(refs, features.Ref{ID: f.ID, Options: f.Options})
	}
	var fs []features.Feature
	if len(refs) > 0 {
		res := &features.Resolver{CacheDir: filepath.Join(r.cfg.DataDir, "features"), RootDir: repoDir, Log: r.log.With("env", env.Id)}
		if fs, err = res.Resolve(ctx, refs, filepath.Dir(cfg.Path), cfg.OverrideFeatureInstallOrder); err != nil {
			return err
		}
	}
	entries := imageEntries
	for _, f := range fs {
		e, err := featureEntry(f)
		if err != nil {
			return err
		}
		entries = append(entries, e)
	}
	merged, err := devcontainer.Merge(cfg, entries)
	if err != nil {
		return err
	}
	if err := merged.Check(r.allow(env.GetSpec().GetClassId())); err != nil {
		return err
	}
	if err := r.checkHostRequirements(env.GetSpec().GetClassId(), merged.HostRequirements()); err != nil {
		return err
	}
	// ${containerEnv:VAR} resolves against the container's environment.
	containerEnv := merged.ContainerEnv()
	for k, v := range cfg.Run.Env { // runArgs -e/--env
		containerEnv[k] = v
	}
	dc.ContainerEnv = expandEnv(img.Config.Env, containerEnv)
	if err := merged.ResolveContainerEnv(envMap(dc.ContainerEnv)); err != nil {
		return err
	}
	for _, p := range merged.ForwardPorts() {
		if p.Host == "" {
			dc.Ports.Forward = append(dc.Ports.Forward, p.Port)
		}
	}
	for pat, a := range merged.PortsAttributes() {
		if dc.Ports.Attrs == nil {
			dc.Ports.Attrs = map[string]dcPortAttrs{}
		}
		dc.Ports.Attrs[pat] = dcPortAttrs{Label: a.Label, OnAutoForward: a.OnAutoForward}
	}
	if o := merged.OtherPortsAttributes(); o != nil {
		dc.Ports.Other = &dcPortAttrs{Label: o.Label, OnAutoForward: o.OnAutoForward}
	}
	dc.Hostname, dc.AddHosts = cfg.Run.Hostname, cfg.Run.AddHosts
	dc.Entrypoints, dc.WorkingDir = merged.Entrypoints(), img.Config.WorkingDir
	if !merged.OverrideCommand() {
		dc.Command = append(slices.Clone(img.Config.Entrypoint), img.Config.Cmd...)
	}
	for _, m := range merged.Mounts() {
		if m.Type == "volume" || m.Type == "tmpfs" {
			dc.Mounts = append(dc.Mounts, dcMount{Type: m.Type, Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
		}
	}
	if u := merged.ContainerUser(); u != "" {
		st.User = u
	}
	if u := merged.RemoteUser(); u != "" {
		st.User = u
	}
	dc.RemoteUser = st.User
	dc.UserEnvProbe = merged.UserEnvProbe()
	for k, v := range merged.RemoteEnv() {
		if v != nil {
			dc.RemoteEnv = append(dc.RemoteEnv, k+"="+*v)
		}
	}
	sort.Strings(dc.RemoteEnv)
	dc.Hooks = hooks(merged.Lifecycle())
	if cust := merged.Customizations(); len(cust) > 0 {
		b, _ := json.Marshal(cust)
		dc.Customizations = string(b)
		dc.Extensions = extensions(cust)
	}
	if len(fs) == 0 {
		return nil
	}
	dc.FeaturesKey = features.CacheKey(img.Digest+"|"+st.User+"|"+merged.ContainerUser(), fs)
	if layer := r.featuresLayer(dc.FeaturesKey); dirExists(layer) {
		st.Layers = append(st.Layers, layer) // installed before: reuse
		return nil
	}
	dc.FeaturesPending = true
	if err := os.RemoveAll(lay.features()); err != nil {
		return err
	}
	if err := features.Stage(ctx, fs, lay.features(), int(st.IDMap.HostID), int(st.IDMap.HostID)); err != nil {
		return err
	}
	script := features.InstallScript(fs, featuresDir, st.User, merged.ContainerUser())
	return os.WriteFile(filepath.Join(lay.features(), "install.sh"), []byte(script), 0o644)
}

// featureEntry is a feature's metadata as an image-metadata entry, so the
// spec's merge rules apply to it (between the image's and the config's).
func featureEntry(f features.Feature) (devcontainer.MetadataEntry, error) {
	b, err := json.Marshal(f.Meta)
	if err != nil {
		return nil, err
	}
	var e devcontainer.MetadataEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, err
	}
	e["id"] = f.Ref.ID
	return e, nil
}

// checkHostRequirements fails when the environment's class is smaller than
// devcontainer.json's hostRequirements ask for.
func (r *Runner) checkHostRequirements(class string, req *devcontainer.HostRequirements) error {
	if req == nil {
		return nil
	}
	for _, c := range r.cfg.Classes {
		if c.GetId() != class {
			continue
		}
		_, err := devcontainer.ChooseClass(req, []devcontainer.Class{{ID: c.GetId(), CPUs: int(c.GetCpus()), Memory: c.GetMemoryBytes(), Storage: c.GetDiskBytes()}})
		if err != nil {
			return usererr.Wrap(err, "class %q does not meet devcontainer.json's hostRequirements: %v", class, err)
		}
	}
	return nil
}

func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// volumeDir is the environment-local directory behind a volume mount.
func volumeDir(lay layout, m dcMount) string {
	name := m.Source
	if name == "" {
		name = "anon-" + strings.ReplaceAll(strings.Trim(m.Target, "/"), "/", "-")
	}
	return filepath.Join(lay.dir, "volumes", strings.ReplaceAll(name, "/", "-"))
}

func (r *Runner) featuresLayer(key string) string {
	return filepath.Join(r.cfg.DataDir, "images", "features", key)
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// expandEnv applies containerEnv over the image's environment, expanding
// ${VAR} and $VAR against what is set so far (as Docker's ENV does).
func expandEnv(base []string, add map[string]string) []string {
	vals := map[string]string{}
	var order []string
	for _, kv := range base {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	keys := make([]string, 0, len(add))
	for k := range add {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		// ${VAR}, $VAR and the spec's ${containerEnv:VAR} all name what the
		// container has so far.
		v := os.Expand(add[k], func(n string) string { return vals[strings.TrimPrefix(n, "containerEnv:")] })
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vals[k])
	}
	return out
}

func hooks(l devcontainer.Lifecycle) lifecycle.Hooks {
	conv := func(in []devcontainer.LifecycleCommand) []lifecycle.Command {
		out := make([]lifecycle.Command, 0, len(in))
		for _, c := range in {
			lc := command(c.Command)
			lc.Origin = c.Origin
			out = append(out, lc)
		}
		return out
	}
	return lifecycle.Hooks{OnCreate: conv(l.OnCreate), UpdateContent: conv(l.UpdateContent), PostCreate: conv(l.PostCreate),
		PostStart: conv(l.PostStart), PostAttach: conv(l.PostAttach), WaitFor: l.WaitFor}
}

func command(c devcontainer.Command) lifecycle.Command {
	out := lifecycle.Command{Shell: c.Shell, Args: c.Args}
	if c.Parallel != nil {
		out.Parallel = map[string]lifecycle.Command{}
		for _, n := range c.Parallel {
			out.Parallel[n.Name] = command(n.Command)
		}
	}
	return out
}

// extensions lists customizations.vscode.extensions.
func extensions(cust map[string][]any) []string {
	var out []string
	for _, v := range cust["vscode"] {
		m, _ := v.(map[string]any)
		list, _ := m["extensions"].([]any)
		for _, e := range list {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// agentRunner runs lifecycle commands as the environment's remote user.
type agentRunner struct {
	c   *agentclient.Client
	dc  *dcState
	env []string
}

func (a agentRunner) Exec(ctx context.Context, cmd lifecycle.Command, out io.Writer) (int, error) {
	return a.c.Exec(ctx, agentclient.ExecRequest{
		User: a.dc.RemoteUser, Env: a.env, Dir: a.dc.WorkspaceFolder, UserEnvProbe: a.dc.UserEnvProbe,
		Shell: cmd.Shell, Args: cmd.Args, Stdout: out, Stderr: out,
	})
}

// snapshotExcludes are not part of a features layer: cove's own mount
// points and files, and scratch space.
var snapshotExcludes = []string{"/.cove", "/workspaces", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/tmp", "/root/.cache"}

// runDevcontainer installs pending features (as root; the result becomes a
// cached layer for the next environment with the same image, features and
// options) and runs the lifecycle commands as the remote user. A failing
// command marks the devcontainer sub-status failed; the environment stays
// running and reachable so the user can fix it.
func (r *Runner) runDevcontainer(ctx context.Context, w *worker, env *covev1.Environment, lay layout, st *envState, progress, ready func()) error {
	dc := st.DC
	if dc == nil {
		ready()
		return nil
	}
	cs, err := r.rt.State(ctx, env.Id)
	if err != nil {
		return err
	}
	if !dc.FeaturesPending && hooksEmpty(dc.Hooks) {
		// Nothing to run: no agent connection needed.
		ready()
		dc.LifecyclePid = cs.Pid
		w.sub(&w.devc, subReady, "")
		return saveState(lay.state(), st)
	}
	c, err := r.pool.Get(ctx, env.Id, lay.socket())
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(lay.logFile(), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	done := func(sub covev1.SubPhase, msg string) error {
		w.sub(&w.devc, sub, msg)
		dc.LifecyclePid = cs.Pid
		if err := saveState(lay.state(), st); err != nil {
			return err
		}
		progress()
		return nil
	}
	if dc.FeaturesPending {
		w.sub(&w.devc, subInProgress, "installing features")
		progress()
		fmt.Fprintln(logf, "Installing features...")
		code, err := c.Exec(ctx, agentclient.ExecRequest{User: "root", Dir: "/", Shell: "sh " + featuresDir + "/install.sh", Stdout: logf, Stderr: logf})
		if err != nil {
			return fmt.Errorf("install features: %w", err)
		}
		if code != 0 {
			ready()
			return done(subFailed, fmt.Sprintf("installing features failed with exit code %d (see `cove env logs %s`)", code, env.GetMetadata().GetName()))
		}
		if err := os.MkdirAll(filepath.Dir(r.featuresLayer(dc.FeaturesKey)), 0o700); err != nil {
			return err
		}
		if err := features.SnapshotLayer(lay.upper(), r.featuresLayer(dc.FeaturesKey), st.IDMap.HostID, snapshotExcludes); err != nil {
			r.log.Warn("features installed but not cached", "env", env.Id, "err", err)
		}
		dc.FeaturesPending = false
		if err := saveState(lay.state(), st); err != nil {
			return err
		}
		if len(dc.Entrypoints) > 0 {
			// Feature entrypoints exist only now: start the container again
			// so the agent runs them, as it would from a cached build.
			fmt.Fprintln(logf, "Restarting the environment to run feature entrypoints...")
			if err := r.rt.Stop(ctx, env.Id, r.cfg.StopGrace); err != nil {
				return err
			}
			if err := r.rt.Delete(ctx, env.Id); err != nil {
				return err
			}
			if err := r.start(ctx, env, lay, st); err != nil {
				return err
			}
			if err := r.waitAgent(ctx, lay); err != nil {
				return err
			}
			r.pool.Drop(env.Id)
			if cs, err = r.rt.State(ctx, env.Id); err != nil {
				return err
			}
			if c, err = r.pool.Get(ctx, env.Id, lay.socket()); err != nil {
				return err
			}
		}
	}
	kind := lifecycle.Start
	if !dc.CreatedDone {
		kind = lifecycle.Create
	}
	w.sub(&w.devc, subInProgress, "running lifecycle commands")
	progress()
	res, err := lifecycle.Run(ctx, agentRunner{c: c, dc: dc, env: dc.RemoteEnv}, dc.Hooks, kind, logf, ready)
	if res.CreateRan {
		dc.CreatedDone = true
	}
	if err != nil {
		if msg, ok := usererr.Message(err); ok {
			ready()
			return done(subFailed, msg+" (see `cove env logs "+env.GetMetadata().GetName()+"`)")
		}
		_ = saveState(lay.state(), st)
		return err
	}
	return done(subReady, "")
}

// hooksEmpty reports whether there is no lifecycle command at all.
func hooksEmpty(h lifecycle.Hooks) bool {
	return len(h.OnCreate)+len(h.UpdateContent)+len(h.PostCreate)+len(h.PostStart) == 0
}
