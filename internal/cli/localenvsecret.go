package cli

import "strings"

// A repository chooses which of the user's shell variables its
// devcontainer.json references, and its code reads what it gets: a hostile
// repository asking for ${localEnv:COVE_TOKEN} or ${localEnv:GITHUB_TOKEN}
// would take the user's credentials with it. So cove env create never sends
// the CLI's own configuration, and sends a variable whose name looks like a
// credential only when the user names it (--local-env NAME).

// cliOwnEnv are the CLI's own settings and credential: never sent.
var cliOwnEnv = map[string]bool{"COVE_TOKEN": true, "COVE_SERVER": true, "COVE_CONFIG_DIR": true}

// secretWords mark a variable name as a credential's, as a whole word of
// the name (split at '_'): GITHUB_TOKEN, DB_PASSWORD, AWS_SECRET_ACCESS_KEY.
var secretWords = map[string]bool{
	"TOKEN": true, "TOKENS": true, "SECRET": true, "SECRETS": true, "PASSWORD": true, "PASSWD": true, "PASS": true,
	"PWD": false, // the working directory, not a password
	"KEY": true, "KEYS": true, "APIKEY": true, "PRIVATE": true, "CREDENTIAL": true, "CREDENTIALS": true, "CREDS": true,
	"AUTH": true, "SESSION": true, "COOKIE": true, "PAT": true, "SIGNATURE": true, "CERT": true,
}

// secretPrefixes are whole families of credentials.
var secretPrefixes = []string{"AWS_", "AZURE_", "GOOGLE_APPLICATION_CREDENTIALS", "GCP_", "SSH_AUTH_SOCK", "GPG_", "VAULT_", "NPM_", "DOCKER_", "KUBECONFIG"}

// localEnvBlocked says why name is not sent without --local-env NAME, or
// "" when it may be. The CLI's own settings are never sent.
func localEnvBlocked(name string, allowed map[string]bool) string {
	if cliOwnEnv[name] {
		return "is cove's own setting or credential; it is never sent"
	}
	if allowed[name] {
		return ""
	}
	upper := strings.ToUpper(name)
	for _, p := range secretPrefixes {
		if strings.HasPrefix(upper, p) {
			return "looks like a credential (the repository chooses what it references); pass --local-env " + name + " to send it"
		}
	}
	for _, w := range strings.Split(upper, "_") {
		if secretWords[w] {
			return "looks like a credential (the repository chooses what it references); pass --local-env " + name + " to send it"
		}
	}
	return ""
}
