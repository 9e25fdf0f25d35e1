package content

import (
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
)

// sourceKind says how a Source is fetched.
type sourceKind int

const (
	remoteSource sourceKind = iota // https, http, ssh, git, scp-like: fetched by the unprivileged clone
	localSource                    // absolute path or file:// URL: staged by host root first
)

// scpLike matches git's scp-like syntax "[user@]host:path".
var scpLike = regexp.MustCompile(`^(?:[A-Za-z0-9._~-]+@)?[A-Za-z0-9.-]+:[^/]?`)

// classify validates a source URL and says how it is fetched. Anything git
// could interpret as an option or as an exotic transport (ext::, fd::,
// relative paths) is refused.
func classify(gitURL string) (sourceKind, error) {
	switch {
	case gitURL == "":
		return 0, errdefs.InvalidArgument(usererr.New("no git URL given"))
	case strings.HasPrefix(gitURL, "-"):
		return 0, errdefs.InvalidArgument(usererr.New("invalid git URL %q", gitURL))
	case strings.ContainsAny(gitURL, "\x00\n\r"):
		return 0, errdefs.InvalidArgument(usererr.New("invalid git URL: contains control characters"))
	case filepath.IsAbs(gitURL):
		return localSource, nil
	}
	if u, err := url.Parse(gitURL); err == nil && u.Scheme != "" && strings.Contains(gitURL, "://") {
		switch strings.ToLower(u.Scheme) {
		case "https", "http", "ssh", "git":
			if u.Host == "" {
				return 0, errdefs.InvalidArgument(usererr.New("invalid git URL %q: no host", redact(gitURL)))
			}
			return remoteSource, nil
		case "file":
			if u.Host != "" && u.Host != "localhost" {
				return 0, errdefs.InvalidArgument(usererr.New("invalid git URL %q: file URLs must be local", gitURL))
			}
			return localSource, nil
		default:
			return 0, errdefs.InvalidArgument(usererr.New("unsupported git URL scheme %q (use https, ssh, git, file or a local path)", u.Scheme))
		}
	}
	if strings.Contains(gitURL, "::") {
		return 0, errdefs.InvalidArgument(usererr.New("unsupported git URL %q", redact(gitURL)))
	}
	if scpLike.MatchString(gitURL) {
		return remoteSource, nil
	}
	return 0, errdefs.InvalidArgument(usererr.New("invalid git URL %q: use https://, ssh://, git@host:path, file:// or an absolute path", redact(gitURL)))
}

// ClassifySource is the one classification of a content source, shared by
// Clone, the server (who may name a local source) and the runner (whether
// it accepts one). local is true for an absolute path or a file:// URL on
// the runner's host, the scheme compared case-insensitively; err is a user
// error for a source Clone refuses.
func ClassifySource(gitURL string) (local bool, err error) {
	kind, err := classify(gitURL)
	return err == nil && kind == localSource, err
}

// localPath returns the host path of a local source.
func localPath(gitURL string) string {
	if u, err := url.Parse(gitURL); err == nil && strings.EqualFold(u.Scheme, "file") {
		return u.Path
	}
	return gitURL
}

// RepoName returns the directory name a repository is cloned into:
// "https://x/y/myrepo.git" and "git@x:y/myrepo.git" give "myrepo", a local
// path gives its base name. The result is safe as a single path element; it
// is "repo" when nothing usable remains.
func RepoName(gitURL string) string {
	s := gitURL
	if u, err := url.Parse(s); err == nil && u.Scheme != "" && strings.Contains(s, "://") {
		s = u.Path
	} else if !filepath.IsAbs(s) {
		if i := strings.Index(s, ":"); i >= 0 {
			s = s[i+1:] // scp-like host:path
		}
	}
	s = strings.TrimRight(strings.ReplaceAll(s, "\\", "/"), "/")
	s = path.Base(s)
	s = strings.TrimSuffix(s, ".git")
	if s == ".git" || s == "" {
		return "repo"
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	name := strings.TrimLeft(b.String(), ".-")
	if len(name) > 100 {
		name = name[:100]
	}
	if name == "" {
		return "repo"
	}
	return name
}

// redact hides credentials embedded in a URL ("https://user:token@host").
func redact(gitURL string) string {
	u, err := url.Parse(gitURL)
	if err != nil || u.User == nil {
		return gitURL
	}
	u.User = nil
	return strings.Replace(u.String(), "://", "://***@", 1)
}

// shaRef matches a full SHA-1 or SHA-256 object name.
var shaRef = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)

// shortSHA matches what may be an abbreviated object name.
var shortSHA = regexp.MustCompile(`^[0-9a-f]{7,63}$`)

func checkRef(ref string) error {
	if ref == "" {
		return nil
	}
	if strings.HasPrefix(ref, "-") || len(ref) > 255 || strings.ContainsAny(ref, " \t\n\r\x00~^:?*[\\") || strings.Contains(ref, "..") {
		return errdefs.InvalidArgument(usererr.New("invalid git ref %q", ref))
	}
	return nil
}
