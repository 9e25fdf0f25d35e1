package cli

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"connectrpc.com/connect"
	dc "github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
)

// The server's bounds on spec.localEnv (internal/server/validate.go): the
// CLI leaves out what it would refuse rather than fail the create.
const (
	maxLocalEnvVars  = 64
	maxLocalEnvValue = 4096
)

func envCreateCommand() *cobra.Command {
	var name, ref, class, devcontainer, img, configDir string
	var wait, waitAll, dryRun, verbose bool
	var allowLocalEnv []string
	var timeout time.Duration
	var timeouts timeoutFlags // envautostop.go
	cmd := &cobra.Command{
		Use:   "create SOURCE",
		Short: "Create an environment from a git URL or a local repository path",
		Long: "Create an environment from a git URL or a local repository path.\n\n" +
			"devcontainer.json's ${localEnv:VAR} variables refer to your machine: cove env create\n" +
			"sends the values of the variables the configuration references (only those, from\n" +
			"this shell) with the environment's spec. It reads the configuration from SOURCE when\n" +
			"it is a local path; for a git URL, from the current directory when it is a checkout\n" +
			"of that repository, or from --config-dir. --dry-run shows what would be sent.\n\n" +
			"A repository chooses what it references, and its code can read what is sent: a\n" +
			"variable whose name looks like a credential (…TOKEN, …SECRET, …PASSWORD, …KEY,\n" +
			"AWS_…) is sent only when you name it with --local-env NAME, and cove's own\n" +
			"COVE_TOKEN, COVE_SERVER and COVE_CONFIG_DIR never are.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			src := args[0]
			if st, err := os.Stat(src); err == nil && st.IsDir() {
				if src, err = filepath.Abs(src); err != nil {
					return err
				}
			}
			if name == "" {
				name = defaultName(src)
			}
			stderr := cmd.ErrOrStderr()
			if class == "" {
				chosen, err := classForRequirements(cmd.Context(), c, src, devcontainer)
				if err != nil {
					return err
				}
				if chosen != "" {
					fmt.Fprintf(stderr, "Class %s fits devcontainer.json's hostRequirements.\n", chosen)
					class = chosen
				}
			}
			allowed := map[string]bool{}
			for _, n := range allowLocalEnv {
				allowed[n] = true
			}
			le := collectLocalEnv(cmd.Context(), src, devcontainer, configDir, allowed, os.LookupEnv)
			le.explain(stderr, verbose || dryRun)
			to, err := timeouts.spec(cmd.Flags())
			if err != nil {
				return err
			}
			req := &covev1.CreateEnvironmentRequest{
				Name: name,
				Spec: &covev1.EnvironmentSpec{
					Content:          &covev1.ContentSource{GitUrl: src, Ref: ref},
					ClassId:          class,
					DevcontainerPath: devcontainer,
					DefaultImage:     img,
					LocalEnv:         le.values,
					Timeouts:         to,
				},
			}
			if dryRun {
				b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(req)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				fmt.Fprintln(stderr, "Dry run: nothing was created.")
				return nil
			}
			resp, err := c.Environments.CreateEnvironment(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			env := resp.Msg.Environment
			fmt.Fprintf(stderr, "Environment %s (%s) created.\n", termsafe.Line(name), termsafe.Line(env.Id))
			if !wait && !waitAll {
				return nil
			}
			return waitForEnv(cmd.Context(), stderr, c, env, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, timeout, waitAll)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "environment name (default: from the repository)")
	cmd.Flags().StringVar(&ref, "ref", "", "branch, tag or commit to check out")
	cmd.Flags().StringVar(&class, "class", "", "environment class (default: the server's default)")
	cmd.Flags().StringVar(&devcontainer, "devcontainer", "", "path of devcontainer.json in the repository")
	cmd.Flags().StringVar(&img, "image", "", "image to use when the repository names none")
	cmd.Flags().StringVar(&configDir, "config-dir", "", "a local checkout of a git URL SOURCE whose devcontainer.json says which ${localEnv:…} variables to send")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the request that would be sent (with the ${localEnv:…} values) and create nothing")
	cmd.Flags().StringSliceVar(&allowLocalEnv, "local-env", nil, "send this ${localEnv:…} variable although its name looks like a credential (repeatable; cove's own COVE_TOKEN, COVE_SERVER, COVE_CONFIG_DIR are never sent)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "say where the ${localEnv:…} variables come from")
	addTimeoutFlags(cmd.Flags(), &timeouts)
	addWaitFlags(cmd, &wait, &timeout)
	addWaitAllFlag(cmd, &waitAll)
	return cmd
}

// localEnvPlan is what a create sends for devcontainer.json's
// ${localEnv:…} variables, and why.
type localEnvPlan struct {
	from    string            // where the configuration was read ("" when it was not)
	why     string            // why it was not read
	values  map[string]string // sent
	unset   []string          // referenced, not set in this shell: the runner uses their defaults
	refused []string          // referenced and set, but not sendable: "NAME: reason"
}

// collectLocalEnv reads the configuration a create uses (see envCreate's
// help) and picks, from lookup (the process environment), the values of the
// variables it references. It never fails: what it cannot read, it does
// not send, and says why.
func collectLocalEnv(ctx context.Context, src, devcontainerPath, configDir string, allowed map[string]bool, lookup func(string) (string, bool)) localEnvPlan {
	var p localEnvPlan
	dir := configDir
	if dir == "" {
		if st, err := os.Stat(src); err == nil && st.IsDir() {
			dir = src
		} else if top, ok := checkoutOf(ctx, src); ok {
			dir = top
		} else {
			p.why = "the current directory is not a checkout of " + src + " (use --config-dir DIR to name one)"
			return p
		}
	}
	path, err := dc.Find(dir, devcontainerPath)
	if err != nil || path == "" {
		p.why = "no devcontainer.json in " + dir
		if err != nil {
			p.why = err.Error()
		}
		return p
	}
	cfg, err := dc.Parse(path)
	if err != nil {
		p.why = err.Error() // the runner reports it with the create
		return p
	}
	p.from = path
	for _, r := range cfg.LocalEnvReferences() {
		v, ok := lookup(r.Name)
		blocked := localEnvBlocked(r.Name, allowed)
		switch {
		case !ok:
			p.unset = append(p.unset, r.Name)
		case blocked != "":
			p.refused = append(p.refused, r.Name+": "+blocked)
		case !dc.EnvNameRE.MatchString(r.Name):
			p.refused = append(p.refused, r.Name+": not a name cove can send")
		case len(v) > maxLocalEnvValue:
			p.refused = append(p.refused, fmt.Sprintf("%s: %d bytes, at most %d can be sent", r.Name, len(v), maxLocalEnvValue))
		case strings.IndexFunc(v, func(c rune) bool { return c != '\t' && unicode.IsControl(c) }) >= 0:
			p.refused = append(p.refused, r.Name+": has a line break or control character, only single-line values can be sent")
		case len(p.values) >= maxLocalEnvVars:
			p.refused = append(p.refused, fmt.Sprintf("%s: more than %d variables", r.Name, maxLocalEnvVars))
		default:
			if p.values == nil {
				p.values = map[string]string{}
			}
			p.values[r.Name] = v
		}
	}
	return p
}

// explain tells the user what is sent: names always (values only in the
// request --dry-run prints), the rest when verbose.
func (p localEnvPlan) explain(w io.Writer, verbose bool) {
	if len(p.values) > 0 {
		names := make([]string, 0, len(p.values))
		for n := range p.values {
			names = append(names, n)
		}
		slices.Sort(names)
		fmt.Fprintf(w, "Sending localEnv: %s (from your shell; devcontainer.json references them).\n", strings.Join(names, ", "))
	}
	for _, r := range p.refused {
		fmt.Fprintf(w, "Not sending localEnv %s; the environment gets its default.\n", termsafe.Line(r))
	}
	if !verbose {
		return
	}
	switch {
	case p.from == "":
		fmt.Fprintf(w, "No ${localEnv:…} values sent: %s. The runner resolves them to their defaults (or empty) and warns.\n", termsafe.Line(p.why))
	case len(p.values)+len(p.unset)+len(p.refused) == 0:
		fmt.Fprintf(w, "%s references no ${localEnv:…} variables.\n", termsafe.Line(p.from))
	default:
		fmt.Fprintf(w, "localEnv variables read from %s.\n", termsafe.Line(p.from))
	}
	if len(p.unset) > 0 {
		fmt.Fprintf(w, "Not set in your shell (the environment gets their defaults): %s.\n", termsafe.Line(strings.Join(p.unset, ", ")))
	}
}

// checkoutOf returns the top directory of the git checkout the current
// directory is in when one of its remotes is gitURL (compared normalised:
// scheme, user, ".git" and case of the host aside).
func checkoutOf(ctx context.Context, gitURL string) (string, bool) {
	want := normalizeGitURL(gitURL)
	if want == "" {
		return "", false
	}
	top, err := exec.CommandContext(ctx, "git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", false
	}
	out, err := exec.CommandContext(ctx, "git", "config", "--get-regexp", `^remote\..*\.url$`).Output()
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(out), "\n") {
		if _, u, ok := strings.Cut(strings.TrimSpace(line), " "); ok && normalizeGitURL(u) == want {
			return strings.TrimSpace(string(top)), true
		}
	}
	return "", false
}

// normalizeGitURL is host/path of a git URL, for comparison:
// https://github.com/o/r.git, ssh://git@github.com/o/r and
// git@github.com:o/r all give github.com/o/r. "" when it is not one.
func normalizeGitURL(s string) string {
	s = strings.TrimSpace(s)
	var host, p string
	if u, err := url.Parse(s); err == nil && u.Scheme != "" && strings.Contains(s, "://") {
		host, p = u.Hostname(), u.Path
	} else if at, rest, ok := strings.Cut(s, ":"); ok && !strings.Contains(at, "/") {
		if i := strings.LastIndex(at, "@"); i >= 0 {
			at = at[i+1:]
		}
		host, p = at, rest
	} else {
		return ""
	}
	p = strings.TrimSuffix(strings.Trim(p, "/"), ".git")
	if host == "" || p == "" {
		return ""
	}
	return strings.ToLower(host) + "/" + p
}
