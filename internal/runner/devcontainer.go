package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/envdir"
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
	Hostname     string          `json:"hostname,omitempty"`
	AddHosts     []string        `json:"addHosts,omitempty"`
	RemoteUser   string          `json:"remoteUser,omitempty"`
	ContainerEnv []string        `json:"containerEnv,omitempty"` // KEY=VALUE, expanded
	RemoteEnv    []string        `json:"remoteEnv,omitempty"`
	UserEnvProbe string          `json:"userEnvProbe,omitempty"`
	Hooks        lifecycle.Hooks `json:"hooks"`
	FeaturesKey  string          `json:"featuresKey,omitempty"`
	// FeaturesPending: no cached layer has the features: the features step
	// installs them at the first start (then caches them).
	FeaturesPending bool     `json:"featuresPending,omitempty"`
	Warnings        []string `json:"warnings,omitempty"`
	Extensions      []string `json:"extensions,omitempty"`
	Customizations  string   `json:"customizations,omitempty"`
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
func (im *imageStep) allow(class string) devcontainer.Allow {
	return devcontainer.Allow{Build: im.builds.enabled(), Compose: im.net.n.Namespaced(), Capabilities: []string{"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW",
		"SETGID", "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}}
}

// resolveDevcontainer reads the repository's devcontainer.json (nil, nil if
// it has none) and returns the image it names.
func (im *imageStep) loadDevcontainer(env *covev1.Environment, repoDir string) (*devcontainer.Config, []devcontainer.Warning, error) {
	return devcontainer.Load(repoDir, env.GetSpec().GetDevcontainerPath(), devcontainer.LoadOptions{
		LocalWorkspaceFolder: repoDir, DevcontainerID: env.Id, Allow: im.allow(env.GetSpec().GetClassId()),
		LocalEnv: map[string]string{}, // the environment's own variables (secrets come later), never the runner's
	})
}

// applyDevcontainer merges image and feature metadata into cfg, checks the
// result, prepares features (cached layer, or an install at first start)
// and records everything in st.
func (im *imageStep) applyDevcontainer(ctx context.Context, env *covev1.Environment, lay envdir.Layout, st *envState, cfg *devcontainer.Config, warns []devcontainer.Warning, img *image.Image) error {
	repoDir := filepath.Join(lay.Workspace(), st.Content.RepoName)
	dc := &dcState{WorkspaceFolder: workspaces + "/" + st.Content.RepoName}
	for _, w := range warns {
		dc.Warnings = append(dc.Warnings, fmt.Sprint(w))
	}
	st.Image.DC = dc
	if cfg == nil {
		return nil
	}
	if rel, err := filepath.Rel(repoDir, cfg.Path); err == nil {
		dc.ConfigPath = rel
	}
	if cfg.Workspace.WorkspaceFolder != "" {
		dc.WorkspaceFolder = cfg.Workspace.WorkspaceFolder
	}
	if t := cfg.Workspace.MountTarget; t != "" && t != workspaces+"/"+st.Content.RepoName {
		dc.MountTarget = t
	}
	imageEntries, err := devcontainer.ParseImageMetadata(img.Config.Labels["devcontainer.metadata"])
	if err != nil {
		return usererr.Wrap(err, "image %s: devcontainer.metadata label: %v", st.Image.Ref, err)
	}
	var refs []features.Ref
	for _, f := range cfg.Features {
		refs = append(refs, features.Ref{ID: f.ID, Options: f.Options})
	}
	var fs []features.Feature
	if len(refs) > 0 {
		res := &features.Resolver{CacheDir: filepath.Join(im.dataDir, "features"), RootDir: repoDir, Log: im.log.With("env", env.Id)}
		if fs, err = res.Resolve(ctx, refs, filepath.Dir(cfg.Path), cfg.OverrideFeatureInstallOrder); err != nil {
			return err
		}
		features.MarkUsed(fs) // the cache's garbage collection counts from the last use
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
	if err := merged.Check(im.allow(env.GetSpec().GetClassId())); err != nil {
		return err
	}
	if err := im.checkHostRequirements(env.GetSpec().GetClassId(), merged.HostRequirements()); err != nil {
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
		st.Image.User = u
	}
	if u := merged.RemoteUser(); u != "" {
		st.Image.User = u
	}
	dc.RemoteUser = st.Image.User
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
	dc.FeaturesKey = features.CacheKey(featureScope(env), featureInputs(st, dc, img, merged.ContainerUser()), fs)
	if layer := featuresLayer(im.dataDir, dc.FeaturesKey); dirExists(layer) {
		st.Image.Layers = append(st.Image.Layers, layer) // installed before: reuse
		return nil
	}
	dc.FeaturesPending = true
	if err := os.RemoveAll(lay.Features()); err != nil {
		return err
	}
	if err := features.Stage(ctx, fs, lay.Features(), int(st.IDMap.HostID), int(st.IDMap.HostID)); err != nil {
		return err
	}
	script := features.InstallScript(fs, featuresDir, st.Image.User, merged.ContainerUser())
	return os.WriteFile(filepath.Join(lay.Features(), "install.sh"), []byte(script), 0o644)
}

// featureScope is who may share an installed-features layer: the members
// of one organization working on one project (or repository). A layer holds
// whatever the installation wrote, which the repository's configuration
// can steer; it is never reused outside the scope that made it.
func featureScope(env *covev1.Environment) string {
	md := env.GetMetadata()
	if p := md.GetProjectId(); p != "" {
		return "org:" + md.GetOrganizationId() + "|project:" + p
	}
	repo := strings.TrimSuffix(strings.TrimRight(env.GetSpec().GetContent().GetGitUrl(), "/"), ".git")
	return "org:" + md.GetOrganizationId() + "|repo:" + repo
}

// featureInputs is everything besides the features themselves that shapes
// what their installation writes: the image, the users, the container's
// environment (PATH, BASH_ENV... reach the install scripts), what the
// container runs beside the installation (its command and entrypoints),
// its mounts, the workspace folder and the remote environment.
func featureInputs(st *envState, dc *dcState, img *image.Image, containerUser string) []string {
	var mounts []string
	for _, m := range dc.Mounts {
		mounts = append(mounts, fmt.Sprintf("%s:%s:%s:%v", m.Type, m.Source, m.Target, m.ReadOnly))
	}
	join := func(s []string) string { return strings.Join(s, "\x00") }
	return []string{
		"image=" + img.Digest, "user=" + st.Image.User, "containerUser=" + containerUser,
		"containerEnv=" + join(dc.ContainerEnv), "remoteEnv=" + join(dc.RemoteEnv),
		"command=" + join(dc.Command), "entrypoints=" + join(dc.Entrypoints), "workingDir=" + dc.WorkingDir,
		"mounts=" + join(mounts), "workspaceFolder=" + dc.WorkspaceFolder, "mountTarget=" + dc.MountTarget,
	}
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
func (im *imageStep) checkHostRequirements(class string, req *devcontainer.HostRequirements) error {
	if req == nil {
		return nil
	}
	if c := im.classes.find(class); c != nil {
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

// volumeName is what a named volume may be called (Docker's rule): a
// single path element that is never "." or "..".
var volumeName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// volumeDir is the environment-local directory behind a volume mount. A
// name that is not a plain volume name (a path, "..") is refused: it would
// name a directory of the runner's instead of a volume.
func volumeDir(lay envdir.Layout, m dcMount) (string, error) {
	name := m.Source
	if name == "" {
		name = "anon-" + strings.ReplaceAll(strings.Trim(m.Target, "/"), "/", "-")
	} else if !volumeName.MatchString(name) {
		return "", usererr.New("volume name %q (mounted at %s) is not valid: use letters, digits, '_', '.' and '-', starting with a letter or digit", name, m.Target)
	}
	name = strings.ReplaceAll(name, "/", "-")
	dir := filepath.Join(lay.Dir, "volumes", name)
	if name == "." || name == ".." || strings.IndexByte(name, 0) >= 0 || filepath.Dir(dir) != filepath.Join(lay.Dir, "volumes") {
		return "", usererr.New("volume for %s: invalid name %q", m.Target, name)
	}
	return dir, nil
}

// checkVolumes refuses, before anything starts, volume mounts whose names
// volumeDir would refuse.
func checkVolumes(lay envdir.Layout, st *envState) error {
	var all []dcMount
	if st.Image.DC != nil {
		all = append(all, st.Image.DC.Mounts...)
	}
	if st.Image.Compose != nil {
		for _, s := range st.Image.Compose.Services {
			all = append(all, s.Mounts...)
		}
	}
	for _, m := range all {
		if m.Type != "volume" {
			continue
		}
		if _, err := volumeDir(lay, m); err != nil {
			return err
		}
	}
	return nil
}

func featuresLayer(dataDir, key string) string {
	return filepath.Join(dataDir, "images", "features", featuresLayerName(key))
}

// featuresLayerName is the directory name of a features layer: its key
// without ':' (overlayfs takes no ':' in a lower directory's path, which a
// chowned copy of the layer becomes on hosts without idmapped mounts).
func featuresLayerName(key string) string { return strings.ReplaceAll(key, ":", "-") }

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
