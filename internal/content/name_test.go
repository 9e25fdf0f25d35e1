package content

import (
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

func TestRepoName(t *testing.T) {
	for in, want := range map[string]string{
		"https://x/y/myrepo.git":          "myrepo",
		"https://x/y/myrepo":              "myrepo",
		"https://x/y/myrepo/":             "myrepo",
		"https://u:tok@x/y/my%20repo.git": "my-repo",
		"git@github.com:org/tool.git":     "tool",
		"ssh://git@host:22/org/tool.git":  "tool",
		"/home/me/src/project":            "project",
		"/home/me/src/project/":           "project",
		"/srv/git/bare.git":               "bare",
		"file:///srv/git/thing.git":       "thing",
		"https://x/..":                    "repo",
		"https://x/.hidden.git":           "hidden",
		"/":                               "repo",
		"https://x/y/a;rm -rf":            "a-rm--rf",
		"https://x/y/.git":                "repo",
	} {
		if got := RepoName(in); got != want {
			t.Errorf("RepoName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClassify(t *testing.T) {
	for in, want := range map[string]sourceKind{
		"https://github.com/a/b.git": remoteSource,
		"http://127.0.0.1:8080/b":    remoteSource,
		"ssh://git@host/a/b":         remoteSource,
		"git://host/a/b":             remoteSource,
		"git@github.com:a/b.git":     remoteSource,
		"/srv/repo":                  localSource,
		"file:///srv/repo":           localSource,
	} {
		got, err := classify(in)
		if err != nil || got != want {
			t.Errorf("classify(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-uhack", "ext::sh -c touch% /tmp/pwned", "relative/path", "ftp://host/x", "https:///nohost", "file://otherhost/x", "a\nb"} {
		_, err := classify(bad)
		if _, ok := usererr.Message(err); !ok {
			t.Errorf("classify(%q) = %v, want a user error", bad, err)
		}
	}
}

func TestCheckRef(t *testing.T) {
	for _, ok := range []string{"", "main", "feature/x", "v1.2.3", "0123abc"} {
		if err := checkRef(ok); err != nil {
			t.Errorf("checkRef(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"-b", "a..b", "a b", "x:y", "a\x00"} {
		if err := checkRef(bad); err == nil {
			t.Errorf("checkRef(%q) accepted", bad)
		}
	}
}

func TestGitMessage(t *testing.T) {
	for in, want := range map[string]string{
		"Cloning into 'x'...\nremote: Repository not found.\nfatal: repository 'https://h/x.git/' not found\n": "repository 'https://h/x.git/' not found (remote: Repository not found.)",
		"fatal: Remote branch nope not found in upstream origin\n":                                             "Remote branch nope not found in upstream origin",
		"warning: x\nerror: something\n":                                                                       "something",
		"just text\n":                                                                                          "just text",
	} {
		if got := gitMessage(in); got != want {
			t.Errorf("gitMessage(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedact(t *testing.T) {
	if got := redact("https://user:secret@h/x.git"); got != "https://***@h/x.git" {
		t.Errorf("redact = %q", got)
	}
	if got := redact("git@h:x.git"); got != "git@h:x.git" {
		t.Errorf("redact changed an scp-like URL: %q", got)
	}
}
