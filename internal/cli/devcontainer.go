package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/termsafe"
	"github.com/covedev/cove/internal/usererr"
	"github.com/spf13/cobra"
)

// DevcontainerCommand is `cove devcontainer`: tools for devcontainer.json.
func DevcontainerCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "devcontainer", Short: "Inspect devcontainer.json as cove reads it"}
	cmd.AddCommand(devcontainerReadConfiguration())
	return cmd
}

// wouldRefuse is the message of Check (and, merged, Merged.Check) under
// the default runner policy, "" when it would run.
func wouldRefuse(c *devcontainer.Config, m *devcontainer.Merged) string {
	allow := envconfig.Allow(true, true)
	err := c.Check(allow)
	if err == nil && m != nil {
		err = m.Check(allow)
	}
	if err == nil {
		return ""
	}
	if msg, ok := usererr.Message(err); ok {
		return msg
	}
	return err.Error()
}

func devcontainerReadConfiguration() *cobra.Command {
	var workspace, config, imageMetadata string
	var includeMerged bool
	cmd := &cobra.Command{
		Use:   "read-configuration",
		Short: "Print the configuration as JSON, in the shape of `devcontainer read-configuration`",
		Long: `Print the devcontainer.json of a workspace folder as JSON, in the shape of the
Dev Containers reference CLI's read-configuration: legacy properties folded,
local variables substituted (${localEnv:...} from this shell's environment).
Warnings go to standard error. cove does not pull the image here: pass its
devcontainer.metadata label with --image-metadata to merge it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ws := workspace
			if ws == "" {
				ws = "."
			}
			ws, err := filepath.Abs(ws)
			if err != nil {
				return err
			}
			explicit := ""
			if config != "" {
				abs, err := filepath.Abs(config)
				if err != nil {
					return err
				}
				if explicit, err = filepath.Rel(ws, abs); err != nil || !filepath.IsLocal(explicit) {
					return usererr.New("--config %s must be inside the workspace folder %s", config, ws)
				}
			}
			env := map[string]string{}
			for _, kv := range os.Environ() {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = v
			}
			c, warns, err := devcontainer.Read(ws, explicit, devcontainer.LoadOptions{LocalEnv: env})
			if err != nil {
				return err
			}
			if c == nil {
				return usererr.New("Dev container config (%s) not found.", filepath.Join(ws, ".devcontainer", "devcontainer.json"))
			}
			for _, w := range warns {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", termsafe.String(fmt.Sprint(w))) // may quote the repository's property names
			}
			var merged *devcontainer.Merged
			if includeMerged {
				label := ""
				if imageMetadata != "" {
					b, err := os.ReadFile(imageMetadata)
					if err != nil {
						return usererr.Wrap(err, "read image metadata: %v", err)
					}
					label = string(b)
				}
				if merged, err = devcontainer.MergeImageMetadata(c, label); err != nil {
					return err
				}
			}
			b, err := json.Marshal(devcontainer.ReadConfigurationOutput(c, merged))
			if err != nil {
				return err
			}
			if _, err = fmt.Fprintln(cmd.OutOrStdout(), string(b)); err != nil {
				return err
			}
			// The JSON is the reference CLI's; what a runner would refuse
			// is said on standard error, as warnings are.
			if msg := wouldRefuse(c, merged); msg != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: a cove runner with the default policy (Dockerfiles and Compose allowed, Docker's default capabilities) would refuse this configuration:\n  %s\n",
					strings.ReplaceAll(termsafe.String(msg), "\n", "\n  "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&workspace, "workspace-folder", "", "workspace (repository) folder; default the current directory")
	f.StringVar(&config, "config", "", "devcontainer.json path (inside the workspace folder); default: discover")
	f.BoolVar(&includeMerged, "include-merged-configuration", false, "include the configuration merged with image metadata")
	f.StringVar(&imageMetadata, "image-metadata", "", "file holding the image's devcontainer.metadata label, for --include-merged-configuration")
	return cmd
}
