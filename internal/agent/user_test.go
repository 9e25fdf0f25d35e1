package agent

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func writeUserFiles(t *testing.T) (passwd, group string) {
	t.Helper()
	dir := t.TempDir()
	passwd = filepath.Join(dir, "passwd")
	group = filepath.Join(dir, "group")
	must(t, os.WriteFile(passwd, []byte(`# comment
root:x:0:0:root:/root:/bin/bash
dev:x:1000:1000:Dev User,,,:/home/dev:/usr/bin/zsh
noshell:x:1001:1001::/home/noshell:
broken line
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`), 0o644))
	must(t, os.WriteFile(group, []byte(`root:x:0:
dev:x:1000:
docker:x:999:dev,other
wheel:x:10:root, dev
nogroup:x:65534:
`), 0o644))
	return passwd, group
}

func TestLookupAccount(t *testing.T) {
	passwd, group := writeUserFiles(t)
	tests := []struct {
		spec string
		want account
	}{
		{"", account{Name: "root", UID: 0, GID: 0, Groups: []uint32{0, 10}, Home: "/root", Shell: "/bin/bash"}},
		{"dev", account{Name: "dev", UID: 1000, GID: 1000, Groups: []uint32{1000, 999, 10}, Home: "/home/dev", Shell: "/usr/bin/zsh"}},
		{"1000", account{Name: "dev", UID: 1000, GID: 1000, Groups: []uint32{1000, 999, 10}, Home: "/home/dev", Shell: "/usr/bin/zsh"}},
		// An explicit group replaces the primary one and drops the
		// supplementary ones, as in Docker (package passwd).
		{"dev:docker", account{Name: "dev", UID: 1000, GID: 999, Groups: []uint32{999}, Home: "/home/dev", Shell: "/usr/bin/zsh"}},
		{"1000:4242", account{Name: "dev", UID: 1000, GID: 4242, Groups: []uint32{4242}, Home: "/home/dev", Shell: "/usr/bin/zsh"}},
		{"noshell", account{Name: "noshell", UID: 1001, GID: 1001, Groups: []uint32{1001}, Home: "/home/noshell", Shell: "/bin/sh"}},
		// A uid passwd does not list runs with gid 0, as in Docker.
		{"5000", account{Name: "5000", UID: 5000, GID: 0, Groups: []uint32{0}, Home: "/", Shell: "/bin/sh"}},
		{"5000:65534", account{Name: "5000", UID: 5000, GID: 65534, Groups: []uint32{65534}, Home: "/", Shell: "/bin/sh"}},
	}
	for _, tt := range tests {
		got, err := lookupAccount(passwd, group, tt.spec)
		if err != nil {
			t.Errorf("lookupAccount(%q): %v", tt.spec, err)
			continue
		}
		slices.Sort(got.Groups[1:])
		slices.Sort(tt.want.Groups[1:])
		if got.Name != tt.want.Name || got.UID != tt.want.UID || got.GID != tt.want.GID ||
			got.Home != tt.want.Home || got.Shell != tt.want.Shell || !slices.Equal(got.Groups, tt.want.Groups) {
			t.Errorf("lookupAccount(%q) = %+v, want %+v", tt.spec, *got, tt.want)
		}
	}

	for _, spec := range []string{"nosuchuser", "dev:nosuchgroup"} {
		if _, err := lookupAccount(passwd, group, spec); err == nil {
			t.Errorf("lookupAccount(%q) succeeded, want error", spec)
		}
	}

	// Images without /etc/passwd still run as root or a numeric uid.
	dir := t.TempDir()
	got, err := lookupAccount(filepath.Join(dir, "passwd"), filepath.Join(dir, "group"), "")
	if err != nil || got.UID != 0 || got.Home != "/root" || got.Shell != "/bin/sh" {
		t.Errorf("lookupAccount without passwd = %+v, %v", got, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
