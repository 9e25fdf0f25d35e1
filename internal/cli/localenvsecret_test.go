package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestLocalEnvCredentialsNotSent performs the attack of a hostile
// repository that references the user's credentials as ${localEnv:…}
// (its postCreateCommand would then read them in the environment): the
// create sends none of them, says why and how to send one on purpose, and
// never sends cove's own token even when named.
func TestLocalEnvCredentialsNotSent(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, ".devcontainer.json"), `{"image": "x", "containerEnv": {
		"A": "${localEnv:COVE_TOKEN}", "B": "${localEnv:AWS_SECRET_ACCESS_KEY}", "C": "${env:GITHUB_TOKEN}",
		"D": "${localEnv:DB_PASSWORD}", "E": "${localEnv:SSH_AUTH_SOCK}", "F": "${localEnv:GIT_AUTHOR_EMAIL}", "G": "${localEnv:COVE_SERVER}"}}`)
	shell := map[string]string{"COVE_TOKEN": "cove_pat_victim", "AWS_SECRET_ACCESS_KEY": "aws-secret", "GITHUB_TOKEN": "ghp_x",
		"DB_PASSWORD": "hunter2", "SSH_AUTH_SOCK": "/tmp/agent.sock", "GIT_AUTHOR_EMAIL": "dev@example.com", "COVE_SERVER": "https://cove.internal"}
	lookup := func(k string) (string, bool) { v, ok := shell[k]; return v, ok }

	p := collectLocalEnv(context.Background(), "https://git.example/a.git", "", dir, nil, lookup)
	if len(p.values) != 1 || p.values["GIT_AUTHOR_EMAIL"] != "dev@example.com" {
		t.Fatalf("sent %v, want only GIT_AUTHOR_EMAIL", p.values)
	}
	refused := strings.Join(p.refused, "\n")
	for _, want := range []string{"AWS_SECRET_ACCESS_KEY: looks like a credential", "--local-env GITHUB_TOKEN", "DB_PASSWORD", "SSH_AUTH_SOCK", "COVE_TOKEN: is cove's own", "COVE_SERVER: is cove's own"} {
		if !strings.Contains(refused, want) {
			t.Errorf("refusals %q do not say %q", refused, want)
		}
	}

	// Named on purpose: sent; cove's own token: still not.
	p = collectLocalEnv(context.Background(), "https://git.example/a.git", "", dir, map[string]bool{"GITHUB_TOKEN": true, "COVE_TOKEN": true}, lookup)
	if p.values["GITHUB_TOKEN"] != "ghp_x" || len(p.values) != 2 {
		t.Fatalf("with --local-env GITHUB_TOKEN sent %v", p.values)
	}
	if _, ok := p.values["COVE_TOKEN"]; ok {
		t.Fatal("COVE_TOKEN sent although cove's own token is never sent")
	}
}

func TestLocalEnvBlockedNames(t *testing.T) {
	for name, blocked := range map[string]bool{
		"GIT_AUTHOR_NAME": false, "TZ": false, "HOME_DIR": false, "PWD": false, "KEYBOARD_LAYOUT": false, "MONKEY": false,
		"NPM_TOKEN": true, "API_KEY": true, "MY_APIKEY": true, "github_token": true, "AZURE_CLIENT_ID": true, "OPENAI_API_KEY": true, "GH_PAT": true,
	} {
		if got := localEnvBlocked(name, nil) != ""; got != blocked {
			t.Errorf("%s: blocked %v, want %v", name, got, blocked)
		}
	}
}
