package runner

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/envdir"
)

// What the runner keeps on the host for devcontainer.json; envconfig
// resolves the configuration itself.

// allow is what this runner permits of privileged devcontainer settings:
// no privileged mode, the capabilities a container has anyway, Dockerfile
// builds when it has a builder, Docker Compose when it has environment
// networking.
func (im *imageStep) allow() devcontainer.Allow {
	return envconfig.Allow(im.builds.enabled(), im.net.n.Namespaced())
}

// volumeDir is the environment-local directory behind a volume mount
// (envconfig.VolumeName refuses names that are not plain volume names).
func volumeDir(lay envdir.Layout, m envconfig.ConfigMount) (string, error) {
	name, err := envconfig.VolumeName(m)
	if err != nil {
		return "", err
	}
	return filepath.Join(lay.Volumes(), name), nil
}

// featuresLayer is where the installed-features layer of key is cached.
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
