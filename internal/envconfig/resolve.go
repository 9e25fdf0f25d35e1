package envconfig

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/guest"
	"github.com/covedev/cove/internal/lifecycle"
	"github.com/covedev/cove/internal/usererr"
)

// Input is everything resolution reads; Resolve never modifies it.
type Input struct {
	Identity Identity
	// Class is the environment's class, nil when the runner offers no
	// class of its id (then hostRequirements are not checked).
	Class *Class
	// Classes are the classes the runner offers, for messages naming
	// those that would allow what a configuration asks for.
	Classes []*Class
	// Allow is the runner's policy for settings that weaken isolation
	// (see the package func Allow).
	Allow devcontainer.Allow
	// Config is the repository's devcontainer.json (devcontainer.Load),
	// nil when it has none; Warnings are the load's.
	Config   *devcontainer.Config
	Warnings []devcontainer.Warning
	// RepoDir is the checkout's directory as Config.Path names it: the
	// state records the configuration's path relative to it.
	RepoDir string
	// Image is the dev container's image; with Compose, the dev service's
	// as pulled or built (Resolve applies the service's settings to it).
	Image Image
	// Features are the devcontainer.json's features, resolved, in install
	// order.
	Features []Feature
	// Compose is set for a Docker Compose configuration.
	Compose *ComposeInput
}

// Result is a resolution: the configuration to persist, and what
// installing the features needs.
type Result struct {
	Resolved
	// Features is nil when the configuration has no features.
	Features *FeatureInstall
}

// FeatureInstall is what the runner needs to key, cache and install the
// features: the features cache key is features.CacheKey(Scope, Inputs,
// the resolved features); the install script is
// features.InstallScript(features, guest.FeaturesDir, RemoteUser,
// ContainerUser).
type FeatureInstall struct {
	// Scope is who may share the installed layer (FeatureScope).
	Scope string
	// Inputs is everything besides the features themselves that shapes
	// what their installation writes.
	Inputs []string
	// RemoteUser is the user sessions run as; ContainerUser is the merged
	// containerUser ("" for the image's).
	RemoteUser, ContainerUser string
}

// Resolve turns the inputs into the environment's resolved configuration:
// for Compose, the sibling services and the dev service's settings applied
// to its image; then devcontainer.json merged with the image's and the
// features' metadata, checked against the policy and the class, and
// resolved (containerEnv expanded over the image's environment, ports,
// mounts, users, lifecycle hooks, entrypoints and command); then the dev
// service's compose settings; and last the volume names, all checked. The
// errors a user can act on are usererr errors.
func Resolve(in Input) (*Result, error) {
	res := &Result{}
	img := in.Image
	if in.Compose != nil {
		cs, dev, err := resolveCompose(in.Compose, in.Image)
		if err != nil {
			return nil, err
		}
		res.Compose, img = cs, dev
	}
	res.Ref, res.Digest, res.Layers = img.Ref, img.Digest, slices.Clone(img.Layers)
	res.User, res.Env = img.Config.User, img.Config.Env
	if err := resolveDevcontainer(in, img, res); err != nil {
		return nil, err
	}
	if in.Compose != nil {
		ApplyComposeDev(res.DC, in.Compose.Project, in.Compose.Warnings)
	}
	if err := CheckVolumes(&res.Resolved); err != nil {
		return nil, err
	}
	return res, nil
}

// resolveDevcontainer sets res.DC (and res.User, res.Features) from
// devcontainer.json merged with img's and the features' metadata.
func resolveDevcontainer(in Input, img Image, res *Result) error {
	repo := in.Identity.RepoName
	dc := &DevcontainerState{WorkspaceFolder: guest.Workspaces + "/" + repo}
	for _, w := range in.Warnings {
		dc.Warnings = append(dc.Warnings, fmt.Sprint(w))
	}
	res.DC = dc
	cfg := in.Config
	if cfg == nil {
		return nil
	}
	if rel, err := filepath.Rel(in.RepoDir, cfg.Path); err == nil {
		dc.ConfigPath = rel
	}
	dc.Name = cfg.Name
	if cfg.Workspace.WorkspaceFolder != "" {
		dc.WorkspaceFolder = cfg.Workspace.WorkspaceFolder
	}
	if t := cfg.Workspace.MountTarget; t != "" && t != guest.Workspaces+"/"+repo {
		dc.MountTarget = t
	}
	entries, err := devcontainer.ParseImageMetadata(img.Config.Labels["devcontainer.metadata"])
	if err != nil {
		return usererr.Wrap(err, "image %s: devcontainer.metadata label: %v", img.Ref, err)
	}
	for _, f := range in.Features {
		e, err := FeatureEntry(f)
		if err != nil {
			return err
		}
		entries = append(entries, e)
	}
	if err := CheckFeatures(cfg, in.Features, in.Allow, in.Classes); err != nil {
		return err
	}
	merged, err := devcontainer.Merge(cfg, entries)
	if err != nil {
		return err
	}
	if err := merged.Check(in.Allow); err != nil {
		return err
	}
	req, err := merged.CheckedHostRequirements()
	if err != nil {
		return err
	}
	if err := CheckHostRequirements(in.Class, req); err != nil {
		return err
	}
	// The container's environment: the image's, the features'
	// containerEnv, then the configuration's.
	dc.ContainerEnv = devContainerEnv(in, cfg, merged, img, dc)
	// ${containerEnv:VAR} resolves against the container's environment
	// (in remoteEnv, lifecycle commands... not in containerEnv).
	if err := merged.ResolveContainerEnv(EnvMap(dc.ContainerEnv)); err != nil {
		return err
	}
	// Again: ${containerEnv:…} may have changed what was checked (a mount
	// source that looked like a folder of the repository).
	if err := merged.Check(in.Allow); err != nil {
		return err
	}
	resolvePorts(dc, merged, composeServices(in.Compose))
	dc.Hostname, dc.AddHosts = cfg.Run.Hostname, slices.Clone(cfg.Run.AddHosts)
	dc.Entrypoints, dc.WorkingDir = merged.Entrypoints(), img.Config.WorkingDir
	if !merged.OverrideCommand() {
		dc.Command = append(slices.Clone(img.Config.Entrypoint), img.Config.Cmd...)
	}
	for _, m := range merged.Mounts() {
		switch m.Type {
		case "volume", "tmpfs":
			dc.Mounts = append(dc.Mounts, ConfigMount{Type: m.Type, Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
		case "bind":
			// A folder of the repository (Check refused the rest): the
			// runner mounts it resolved inside the checkout, through no
			// symbolic link.
			rel, ok := devcontainer.RepoBindSource(m.Source, cfg.LocalWorkspaceFolder())
			if !ok {
				return fmt.Errorf("mount of %s at %s: only folders of the repository can be bind-mounted", m.Source, m.Target)
			}
			dc.Mounts = append(dc.Mounts, ConfigMount{Type: "bind", Source: filepath.Join(in.RepoDir, rel), Target: m.Target, ReadOnly: m.ReadOnly})
		}
	}
	if u := merged.ContainerUser(); u != "" {
		res.User = u
	}
	if u := merged.RemoteUser(); u != "" {
		res.User = u
	}
	dc.RemoteUser = res.User
	dc.UserEnvProbe = merged.UserEnvProbe()
	for k, v := range merged.RemoteEnv() {
		if v != nil {
			dc.RemoteEnv = append(dc.RemoteEnv, k+"="+*v)
		}
	}
	sort.Strings(dc.RemoteEnv)
	dc.Hooks = Hooks(merged.Lifecycle())
	if cust := merged.Customizations(); len(cust) > 0 {
		b, err := json.Marshal(cust)
		if err != nil {
			return fmt.Errorf("customizations: %w", err)
		}
		dc.Customizations = string(b)
		dc.Extensions = Extensions(cust)
	}
	if len(in.Features) > 0 {
		res.Features = &FeatureInstall{
			Scope:      FeatureScope(in.Identity),
			Inputs:     FeatureInputs(res.User, merged.ContainerUser(), img.Digest, dc),
			RemoteUser: res.User, ContainerUser: merged.ContainerUser(),
		}
	}
	return nil
}

// FeatureScope is who may share an installed-features layer: the members
// of one organization working on one project (or repository). A layer
// holds whatever the installation wrote, which the repository's
// configuration can steer; it is never reused outside the scope that made
// it.
func FeatureScope(id Identity) string {
	if p := id.ProjectID; p != "" {
		return "org:" + id.OrganizationID + "|project:" + p
	}
	repo := strings.TrimSuffix(strings.TrimRight(id.GitURL, "/"), ".git")
	return "org:" + id.OrganizationID + "|repo:" + repo
}

// FeatureInputs is everything besides the features themselves that shapes
// what their installation writes: the image (digest), the users, the
// container's environment (PATH, BASH_ENV... reach the install scripts),
// what the container runs beside the installation (its command and
// entrypoints), its mounts, the workspace folder and the remote
// environment. dc is the devcontainer state before the Compose dev
// service's settings are added.
func FeatureInputs(user, containerUser, imageDigest string, dc *DevcontainerState) []string {
	var mounts []string
	for _, m := range dc.Mounts {
		src := m.Source
		if m.Type == "bind" {
			// A folder of the checkout, whose host path names the
			// environment: like the workspace, its content is not an input.
			src = ""
		}
		mounts = append(mounts, fmt.Sprintf("%s:%s:%s:%v", m.Type, src, m.Target, m.ReadOnly))
	}
	join := func(s []string) string { return strings.Join(s, "\x00") }
	return []string{
		"image=" + imageDigest, "user=" + user, "containerUser=" + containerUser,
		"containerEnv=" + join(dc.ContainerEnv), "remoteEnv=" + join(dc.RemoteEnv),
		"command=" + join(dc.Command), "entrypoints=" + join(dc.Entrypoints), "workingDir=" + dc.WorkingDir,
		"mounts=" + join(mounts), "workspaceFolder=" + dc.WorkspaceFolder, "mountTarget=" + dc.MountTarget,
	}
}

// FeatureEntry is a feature's metadata as an image-metadata entry, so the
// spec's merge rules apply to it (between the image's and the config's),
// with the feature's id as written.
func FeatureEntry(f Feature) (devcontainer.MetadataEntry, error) {
	var e devcontainer.MetadataEntry
	if err := json.Unmarshal(f.Metadata, &e); err != nil {
		return nil, fmt.Errorf("feature %s: metadata: %w", f.ID, err)
	}
	if e == nil {
		e = devcontainer.MetadataEntry{}
	}
	e["id"] = f.ID
	return e, nil
}

// CheckHostRequirements fails with a user error when class is smaller
// than devcontainer.json's hostRequirements ask for, saying what is
// missing in human units. A nil class or requirement passes.
func CheckHostRequirements(class *Class, req *devcontainer.HostRequirements) error {
	if req == nil || class == nil {
		return nil
	}
	unmet, err := devcontainer.Unmet(req, devcontainer.Class{ID: class.ID, CPUs: class.CPUs, Memory: class.MemoryBytes, Storage: class.DiskBytes})
	if err != nil {
		return err
	}
	if len(unmet) > 0 {
		return usererr.New("class %q does not meet devcontainer.json's hostRequirements: %s; create the environment with a larger class (cove env create --class) or lower hostRequirements", class.ID, strings.Join(unmet, ", "))
	}
	return nil
}

// EnvMap is KEY=VALUE pairs as a map (the last wins).
func EnvMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// Extensions lists customizations.vscode.extensions.
func Extensions(cust map[string][]any) []string {
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

// Hooks are the merged lifecycle commands as the lifecycle package runs
// them, each with its origin.
func Hooks(l devcontainer.Lifecycle) lifecycle.Hooks {
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

// HooksEmpty reports whether there is no lifecycle command to run at
// start (postAttachCommand runs per session).
func HooksEmpty(h lifecycle.Hooks) bool {
	return len(h.OnCreate)+len(h.UpdateContent)+len(h.PostCreate)+len(h.PostStart) == 0
}
