package content

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/covedev/cove/internal/errdefs"
)

// What git's output says about a failure, for a retry loop's decision: a
// DNS blip or a server's bad minute (Unavailable) is retried; a repository
// or branch that does not exist (NotFound), credentials it would need
// (PermissionDenied) or a URL it refuses (InvalidArgument) stop the
// environment with the message until someone changes the spec. Output that
// matches none of these keeps a user error's default, FailedPrecondition:
// git failing in a way nobody classified is not retried forever.

// httpStatus finds the status of a failed HTTP request in curl's and git's
// words ("The requested URL returned error: 503", "RPC failed; HTTP 502").
var httpStatus = regexp.MustCompile(`(?i)(?:returned error: |RPC failed; HTTP )([1-5][0-9][0-9])`)

// gitPatterns are matched in order, case-insensitively, against git's
// output; the first match decides.
var gitPatterns = []struct {
	substr string
	cat    errdefs.Category
}{
	// Credentials: with prompts disabled and no helper, git says it could
	// not ask for them.
	{"authentication failed", errdefs.CategoryPermissionDenied},
	{"could not read username", errdefs.CategoryPermissionDenied},
	{"could not read password", errdefs.CategoryPermissionDenied},
	{"terminal prompts disabled", errdefs.CategoryPermissionDenied},
	{"permission denied (publickey", errdefs.CategoryPermissionDenied},
	{"host key verification failed", errdefs.CategoryPermissionDenied},
	// What was named does not exist.
	{"repository not found", errdefs.CategoryNotFound},
	{"' not found", errdefs.CategoryNotFound}, // fatal: repository 'https://…/x/' not found
	{"not found in upstream", errdefs.CategoryNotFound},
	{"couldn't find remote ref", errdefs.CategoryNotFound},
	{"does not appear to be a git repository", errdefs.CategoryNotFound},
	{"no such repository", errdefs.CategoryNotFound},
	// What git refuses to do with the URL.
	{"transport '", errdefs.CategoryInvalidArgument}, // transport 'ext' not allowed
	{"unable to find remote helper", errdefs.CategoryInvalidArgument},
	{"unsupported protocol", errdefs.CategoryInvalidArgument},
	{"url using bad/illegal format", errdefs.CategoryInvalidArgument},
	// The network or the server, for now.
	{"could not resolve host", errdefs.CategoryUnavailable},
	{"could not resolve hostname", errdefs.CategoryUnavailable},
	{"temporary failure in name resolution", errdefs.CategoryUnavailable},
	{"unable to look up", errdefs.CategoryUnavailable},
	{"connection refused", errdefs.CategoryUnavailable},
	{"connection timed out", errdefs.CategoryUnavailable},
	{"operation timed out", errdefs.CategoryUnavailable},
	{"connection reset", errdefs.CategoryUnavailable},
	{"failed to connect", errdefs.CategoryUnavailable},
	{"network is unreachable", errdefs.CategoryUnavailable},
	{"no route to host", errdefs.CategoryUnavailable},
	{"operation too slow", errdefs.CategoryUnavailable},
	{"early eof", errdefs.CategoryUnavailable},
	{"rpc failed", errdefs.CategoryUnavailable},
	{"remote end hung up unexpectedly", errdefs.CategoryUnavailable},
	{"unexpected disconnect", errdefs.CategoryUnavailable},
	{"transfer closed with outstanding read data", errdefs.CategoryUnavailable},
	{"empty reply from server", errdefs.CategoryUnavailable},
}

// gitCategory returns the category of a failed git command from its output,
// and false when the output says nothing it knows. Only git's own words
// count: what the server printed ("remote: …") could claim anything.
func gitCategory(output string) (errdefs.Category, bool) {
	var own []string
	for _, l := range strings.Split(output, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "remote:") {
			own = append(own, l)
		}
	}
	out := strings.Join(own, "\n")
	// A status code is the most precise word: "RPC failed; HTTP 401"
	// is about credentials, not the network.
	if m := httpStatus.FindStringSubmatch(out); m != nil {
		code, _ := strconv.Atoi(m[1])
		switch {
		case code == 401 || code == 403:
			return errdefs.CategoryPermissionDenied, true
		case code == 404 || code == 410:
			return errdefs.CategoryNotFound, true
		case code == 408 || code == 429 || code >= 500:
			return errdefs.CategoryUnavailable, true
		}
	}
	low := strings.ToLower(out)
	for _, p := range gitPatterns {
		if strings.Contains(low, p.substr) {
			return p.cat, true
		}
	}
	return errdefs.CategoryUnknown, false
}
