package cli

import (
	"strings"
	"testing"
)

func TestDefaultName(t *testing.T) {
	for in, want := range map[string]string{
		"/home/me/MyRepo":                    "myrepo",
		"https://github.com/org/my_repo.git": "my-repo",
		"git@host:org/x.y.git":               "x-y",
		"./":                                 "env",
		strings.Repeat("a", 80):              strings.Repeat("a", 63),
	} {
		if got := defaultName(in); got != want {
			t.Errorf("defaultName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReplaceBlockKeepsUserConfig(t *testing.T) {
	user := "Host work\n  User me\n"
	block := sshConfigBlock("/usr/local/bin/cove", "/home/me/.config/cove/ssh")
	once := string(replaceBlock([]byte(user), block))
	if !strings.HasPrefix(once, markStart) || !strings.HasSuffix(once, user) {
		t.Fatalf("first write:\n%s", once)
	}
	twice := string(replaceBlock([]byte(once), block))
	if twice != once {
		t.Fatalf("not idempotent:\n%s\n---\n%s", once, twice)
	}
	if n := strings.Count(twice, markStart); n != 1 {
		t.Fatalf("%d managed blocks", n)
	}
	for _, want := range []string{
		`Match host *.cove exec "'/usr/local/bin/cove' ssh --refresh-cert %n"`,
		`ProxyCommand "/usr/local/bin/cove" ssh --stdio %n`,
		"HostKeyAlias cove-gateway",
		`CertificateFile "/home/me/.config/cove/ssh/%n-cert.pub"`,
		"StrictHostKeyChecking yes",
	} {
		if !strings.Contains(block, want) {
			t.Errorf("block lacks %q:\n%s", want, block)
		}
	}
	if got := string(replaceBlock(nil, block)); got != block {
		t.Fatalf("empty config: %q", got)
	}
}
