package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// loadRemoteEnv reads the remoteEnv file (JSON: a list of KEY=VALUE, as
// the runner writes it). A missing file (or no path) means none. An entry
// without a name is an error: the file is the runner's, so it is
// corrupt, not a user's mistake.
func loadRemoteEnv(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read remoteEnv: %w", err)
	}
	var env []string
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("parse remoteEnv %s: %w", path, err)
	}
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("parse remoteEnv %s: %q is not NAME=VALUE", path, kv)
		}
	}
	return env, nil
}
