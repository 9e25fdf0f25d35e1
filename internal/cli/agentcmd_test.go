package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestAgentServiceMode runs `cove agent` in service mode: it exits with its
// command's code (as main would, through ExitCode), writes the exit code
// file, and keeps its own log in --log-file.
func TestAgentServiceMode(t *testing.T) {
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "keys")
	if err := os.WriteFile(keys, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		script string
		code   int
	}{{"exit 0", 0}, {"exit 7", 7}, {"kill -TERM $$", 128 + 15}} {
		codeFile, logFile := filepath.Join(dir, "code"), filepath.Join(dir, "agent.log")
		cmd := AgentCommand()
		cmd.SetArgs([]string{
			"--socket", filepath.Join(dir, "agent.sock"), "--authorized-keys", keys,
			"--exit-with-command", "--exit-code-file", codeFile, "--log-file", logFile,
			"--command", "sh", "--command", "-c", "--command", tc.script,
		})
		err := cmd.Execute()
		if tc.code == 0 && err != nil {
			t.Errorf("%s: %v, want success", tc.script, err)
		}
		if tc.code != 0 {
			if code, remote := ExitCode(err); code != tc.code || !remote {
				t.Errorf("%s: exit code %d (quiet %v) from %v, want %d", tc.script, code, remote, err, tc.code)
			}
		}
		if data, _ := os.ReadFile(codeFile); string(data) != strconv.Itoa(tc.code)+"\n" {
			t.Errorf("%s: exit code file %q", tc.script, data)
		}
		if data, _ := os.ReadFile(logFile); !strings.Contains(string(data), "agent listening") || !strings.Contains(string(data), "service exiting") {
			t.Errorf("%s: agent log %q lacks the agent's messages", tc.script, data)
		}
	}
}
