// Package cli implements the cove command line: the user commands (login,
// env, ssh, config-ssh), the daemons (up, server, runner) and the agent
// entry point. cmd/cove wires these into one binary.
package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/covedev/cove/internal/apiclient"
	"github.com/covedev/cove/internal/atomicfile"
)

// Config is the CLI's saved login.
type Config struct {
	Server string `json:"server"`
	Token  string `json:"token"`
}

// configDir is where the CLI keeps its login and SSH keys.
func configDir() (string, error) {
	if d := os.Getenv("COVE_CONFIG_DIR"); d != "" {
		return d, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "cove"), nil
}

func loadConfig() (Config, error) {
	var c Config
	dir, err := configDir()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return c, err
	}
	if err == nil {
		if err := json.Unmarshal(b, &c); err != nil {
			return c, fmt.Errorf("parse %s: %w", filepath.Join(dir, "config.json"), err)
		}
	}
	if v := os.Getenv("COVE_SERVER"); v != "" {
		c.Server = v
	}
	if v := os.Getenv("COVE_TOKEN"); v != "" {
		c.Token = v
	}
	return c, nil
}

func saveConfig(c Config) error {
	dir, err := configDir()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	return atomicfile.Write(filepath.Join(dir, "config.json"), b, 0o600)
}

// clients returns API clients for the saved login.
func clients() (*apiclient.Clients, Config, error) {
	c, err := loadConfig()
	if err != nil {
		return nil, c, err
	}
	if c.Server == "" || c.Token == "" {
		return nil, c, errors.New("not logged in: run `cove login --server URL --token TOKEN` (or `cove up`, which logs in for you)")
	}
	return apiclient.New(http.DefaultClient, c.Server, c.Token), c, nil
}
