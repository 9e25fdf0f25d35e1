package compose

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/covedev/cove/internal/usererr"
)

// Options configures LoadWithOptions.
type Options struct {
	// RepoDir is the repository checkout on the host.
	RepoDir string
	// ConfigDir is the folder of devcontainer.json, absolute or relative to
	// RepoDir; Files are relative to it.
	ConfigDir string
	// Files are the dockerComposeFile entries, merged in order.
	Files []string
	// DevService is devcontainer.json's service.
	DevService string
	// RunServices is devcontainer.json's runServices; empty runs every
	// service. The dev service and dependencies are always included.
	RunServices []string
	// Env is the environment used for interpolation, .env and
	// COMPOSE_PROFILES / COMPOSE_PROJECT_NAME. The process environment is
	// never used.
	Env map[string]string
	// AllowedCaps are capabilities cap_add may name (e.g. granted by the
	// environment's class), like "NET_ADMIN" or "CAP_NET_ADMIN".
	AllowedCaps []string
	// AllowPrivileged accepts privileged: true (a class that grants it).
	AllowPrivileged bool
	// BindRoot is the host directory bind mounts must stay inside; empty
	// means RepoDir. A runner that lays out /workspaces per environment may
	// set it to that directory so the common "../..:/workspaces" works.
	BindRoot string
}

// Load loads and validates the compose files of a devcontainer. files are
// relative to configDir (the folder of devcontainer.json, absolute or
// relative to repoDir). See Options for the other arguments.
func Load(ctx context.Context, repoDir string, files []string, configDir, devService string, runServices []string, env map[string]string) (*Project, []Warning, error) {
	return LoadWithOptions(ctx, Options{
		RepoDir:     repoDir,
		ConfigDir:   configDir,
		Files:       files,
		DevService:  devService,
		RunServices: runServices,
		Env:         env,
	})
}

// LoadWithOptions loads and validates a compose project. Errors a user can
// fix (bad YAML, unknown service, refused keys, a dependency cycle) are
// usererr errors.
func LoadWithOptions(ctx context.Context, o Options) (*Project, []Warning, error) {
	repo, err := filepath.Abs(o.RepoDir)
	if err != nil {
		return nil, nil, fmt.Errorf("repository dir: %w", err)
	}
	if repo, err = filepath.EvalSymlinks(repo); err != nil {
		return nil, nil, fmt.Errorf("repository dir: %w", err)
	}
	bindRoot := repo
	if o.BindRoot != "" {
		if bindRoot, err = filepath.EvalSymlinks(o.BindRoot); err != nil {
			return nil, nil, fmt.Errorf("bind root: %w", err)
		}
	}
	if o.DevService == "" {
		return nil, nil, usererr.New(`devcontainer.json: "service" is required with "dockerComposeFile"`)
	}
	if len(o.Files) == 0 {
		return nil, nil, usererr.New(`devcontainer.json: "dockerComposeFile" is empty`)
	}
	configDir := o.ConfigDir
	if !filepath.IsAbs(configDir) {
		configDir = filepath.Join(repo, configDir)
	}
	var files []string
	for _, f := range o.Files {
		p, err := confineFile(repo, filepath.Join(configDir, f))
		if err != nil {
			return nil, nil, usererr.Wrap(err, "dockerComposeFile %q: %v", f, relMsg(repo, err))
		}
		files = append(files, p)
	}
	workDir := filepath.Dir(files[0])

	env := make([]string, 0, len(o.Env))
	for k, v := range o.Env {
		env = append(env, k+"="+v)
	}
	opts := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(workDir),
		cli.WithEnv(env),
	}
	// .env in the project directory, like docker compose; it must stay in
	// the repository (it may be a symlink).
	dotEnv := filepath.Join(workDir, ".env")
	if _, err := os.Lstat(dotEnv); err == nil {
		p, err := confineFile(repo, dotEnv)
		if err != nil {
			return nil, nil, usererr.Wrap(err, "compose .env file: %v", relMsg(repo, err))
		}
		opts = append(opts, cli.WithEnvFiles(p), cli.WithDotEnv)
	}
	allowed := map[string]bool{}
	for _, f := range files {
		allowed[f] = true
	}
	opts = append(opts,
		cli.WithDefaultProfiles(),
		cli.WithResolvedPaths(true),
		cli.WithLoadOptions(func(lo *loader.Options) {
			// Files are read by the runner: only the given ones, no
			// include or extends.file that could name any host file.
			lo.ResourceLoaders = append([]loader.ResourceLoader{onlyFiles(allowed)}, lo.ResourceLoaders...)
			lo.SkipResolveEnvironment = true // env_file paths are checked first
			lo.SkipResolveLabels = true      // labels are ignored
		}),
	)
	po, err := cli.NewProjectOptions(files, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("compose options: %w", err)
	}
	cp, err := po.LoadProject(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, usererr.Wrap(err, "docker compose: %s", relMsg(repo, err))
	}

	cp, err = selectServices(cp, o.DevService, o.RunServices)
	if err != nil {
		return nil, nil, err
	}
	normalizeVolumes(cp)
	for name, s := range cp.Services {
		for _, ef := range s.EnvFiles {
			if _, err := confineFile(repo, ef.Path); err != nil {
				if errors.Is(err, fs.ErrNotExist) && !bool(ef.Required) {
					continue
				}
				return nil, nil, usererr.Wrap(err, "docker compose: service %q: env_file: %s", name, relMsg(repo, err))
			}
		}
	}
	if cp, err = cp.WithServicesEnvironmentResolved(true); err != nil {
		return nil, nil, usererr.Wrap(err, "docker compose: env_file: %s", relMsg(repo, err))
	}

	v := &validator{repo: repo, bindRoot: bindRoot, allowedCaps: normCaps(o.AllowedCaps), allowPrivileged: o.AllowPrivileged}
	for _, f := range files {
		v.files = append(v.files, filepath.ToSlash(relPath(repo, f)))
	}
	v.project(cp)
	if err := v.err(); err != nil {
		return nil, nil, err
	}
	p, err := convert(cp, o.DevService, repo, bindRoot)
	if err != nil {
		return nil, nil, err
	}
	return p, v.warnings, nil
}

// selectServices applies the dev service and runServices: they are enabled
// even when their profile is not active (like services named on the
// docker compose command line), and with runServices set only they and
// their dependencies remain.
func selectServices(cp *types.Project, dev string, run []string) (*types.Project, error) {
	names := append([]string{dev}, run...)
	for _, n := range names {
		if _, ok := cp.Services[n]; ok {
			continue
		}
		if _, ok := cp.DisabledServices[n]; ok {
			continue
		}
		what := "runServices"
		if n == dev {
			what = `"service"`
		}
		return nil, usererr.New("devcontainer.json: %s names %q, which is not a service of the compose files (services: %s)",
			what, n, strings.Join(cp.ServiceNames(), ", "))
	}
	cp, err := cp.WithServicesEnabled(names...)
	if err != nil {
		return nil, usererr.Wrap(err, "docker compose: %v", err)
	}
	if len(run) > 0 {
		if cp, err = cp.WithSelectedServices(names); err != nil {
			return nil, usererr.Wrap(err, "docker compose: %v", err)
		}
	}
	cp = cp.WithoutUnresolvedOptionalDependencies()
	for name, s := range cp.Services {
		for dep := range s.DependsOn {
			if _, ok := cp.Services[dep]; !ok {
				return nil, usererr.New("docker compose: service %q depends on %q, which is not enabled (missing, or in an inactive profile)", name, dep)
			}
		}
	}
	return cp, nil
}

// confine resolves p (symlinks included) and checks it stays inside root.
func confine(root, p string) (string, error) {
	r, err := filepath.EvalSymlinks(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s does not exist: %w", relPath(root, p), fs.ErrNotExist)
	}
	if err != nil {
		return "", err
	}
	if !within(root, r) {
		return "", fmt.Errorf("%s is outside the repository", relPath(root, p))
	}
	return r, nil
}

// maxFileSize bounds a Compose file, .env or env_file.
const maxFileSize = 4 << 20

// confineFile is confine for a file the runner reads: a regular file (never
// a FIFO that would block the read, or a device), of bounded size.
func confineFile(root, p string) (string, error) {
	r, err := confine(root, p)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(r)
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", relPath(root, p))
	}
	if st.Size() > maxFileSize {
		return "", fmt.Errorf("%s is larger than %d bytes", relPath(root, p), maxFileSize)
	}
	return r, nil
}

func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// relMsg is err's text with the repository's host path removed.
func relMsg(repo string, err error) string {
	s := err.Error()
	s = strings.ReplaceAll(s, repo+string(filepath.Separator), "")
	return strings.ReplaceAll(s, repo, ".")
}

// onlyFiles is a compose resource loader that accepts every reference and
// lets only the given files be read, so that include and extends.file
// cannot make the runner read other host files.
type onlyFiles map[string]bool

func (onlyFiles) Accept(string) bool { return true }

func (a onlyFiles) Load(_ context.Context, p string) (string, error) {
	if a[filepath.Clean(p)] {
		return p, nil
	}
	return "", fmt.Errorf("%s: include and extends.file are not supported; list the files in dockerComposeFile instead", p)
}

func (onlyFiles) Dir(p string) string { return filepath.Dir(p) }

func normCaps(caps []string) map[string]bool {
	m := map[string]bool{}
	for _, c := range caps {
		m[normCap(c)] = true
	}
	return m
}

func normCap(c string) string {
	c = strings.ToUpper(strings.TrimSpace(c))
	if c != "ALL" && !strings.HasPrefix(c, "CAP_") {
		c = "CAP_" + c
	}
	return c
}
