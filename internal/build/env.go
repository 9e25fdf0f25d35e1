package build

import (
	"os"
	"path/filepath"
)

// inheritedEnv are the variables of the runner's environment buildkitd
// gets: what it needs to find its tools and to reach registries (proxies,
// CA bundles), and locale and time zone. Nothing else: buildkitd runs
// hostile Dockerfiles, and a RUN step that escapes into its uid can read
// its /proc/<pid>/environ (review REV-8: secrets such as
// $COVE_BACKUP_S3_SECRET_ACCESS_KEY or cloud credentials must not be
// there).
var inheritedEnv = []string{
	"HOME", "TMPDIR", "TZ", "LANG", "LC_ALL",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
	"http_proxy", "https_proxy", "no_proxy", "all_proxy",
	"SSL_CERT_FILE", "SSL_CERT_DIR",
	"XDG_RUNTIME_DIR",
}

// buildkitdEnv is buildkitd's explicit environment: PATH with runc's
// directory first, the inheritedEnv variables that are set, and for a
// rootless buildkitd (xdg not "") HOME and XDG directories under xdg.
func buildkitdEnv(runcDir, xdg string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	env := []string{"PATH=" + runcDir + ":" + path}
	for _, k := range inheritedEnv {
		if xdg != "" && (k == "HOME" || k == "XDG_RUNTIME_DIR") {
			continue
		}
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if xdg != "" {
		// Rootless buildkitd keeps its sockets and state under XDG dirs.
		env = append(env, "HOME="+xdg, "XDG_RUNTIME_DIR="+filepath.Join(xdg, "run"),
			"XDG_CONFIG_HOME="+filepath.Join(xdg, "config"), "XDG_DATA_HOME="+filepath.Join(xdg, "data"))
	}
	return env
}
