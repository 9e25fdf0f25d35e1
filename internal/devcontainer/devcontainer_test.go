package devcontainer

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/usererr"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestFind(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		explicit string
		want     string // relative to the repo, "" for none
		wantErr  string
	}{
		{name: "none", files: map[string]string{"README": "x"}, want: ""},
		{name: "folder", files: map[string]string{".devcontainer/devcontainer.json": "{}", ".devcontainer.json": "{}"}, want: ".devcontainer/devcontainer.json"},
		{name: "root file", files: map[string]string{".devcontainer.json": "{}", ".devcontainer/b/devcontainer.json": "{}"}, want: ".devcontainer.json"},
		{name: "first subfolder", files: map[string]string{".devcontainer/b/devcontainer.json": "{}", ".devcontainer/a/devcontainer.json": "{}", ".devcontainer/0/other.json": "{}"}, want: ".devcontainer/a/devcontainer.json"},
		{name: "explicit", files: map[string]string{".devcontainer/devcontainer.json": "{}", "ci/dc.json": "{}"}, explicit: "ci/dc.json", want: "ci/dc.json"},
		{name: "explicit missing", files: map[string]string{".devcontainer/devcontainer.json": "{}"}, explicit: "nope.json", wantErr: `devcontainer file "nope.json" not found`},
		{name: "explicit escapes", files: map[string]string{}, explicit: "../etc/passwd", wantErr: "inside the repository"},
		{name: "explicit absolute", files: map[string]string{}, explicit: "/etc/passwd", wantErr: "inside the repository"},
		{name: "explicit directory", files: map[string]string{"d/x": ""}, explicit: "d", wantErr: "not a regular file"},
		{name: "devcontainer is a file", files: map[string]string{".devcontainer": "oops"}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, tt.files)
			got, err := Find(dir, tt.explicit)
			if tt.wantErr != "" {
				msg, ok := usererr.Message(err)
				if !ok || !strings.Contains(msg, tt.wantErr) {
					t.Fatalf("Find error = %v (user message %q), want user error containing %q", err, msg, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			want := ""
			if tt.want != "" {
				want = filepath.Join(dir, filepath.FromSlash(tt.want))
			}
			if got != want {
				t.Fatalf("Find = %q, want %q", got, want)
			}
		})
	}
}

func TestFindSymlinkOutsideRepo(t *testing.T) {
	outside := writeFiles(t, map[string]string{"secret.json": `{"image":"x"}`})
	dir := writeFiles(t, map[string]string{"README": ""})
	if err := os.Symlink(filepath.Join(outside, "secret.json"), filepath.Join(dir, ".devcontainer.json")); err != nil {
		t.Fatal(err)
	}
	_, err := Find(dir, "")
	if msg, ok := usererr.Message(err); !ok || !strings.Contains(msg, "outside the repository") {
		t.Fatalf("Find = %v, want a user error about a path outside the repository", err)
	}
	// A symlink that stays inside the repository is fine.
	dir2 := writeFiles(t, map[string]string{"conf/dc.json": "{}"})
	if err := os.Symlink("conf/dc.json", filepath.Join(dir2, ".devcontainer.json")); err != nil {
		t.Fatal(err)
	}
	if got, err := Find(dir2, ""); err != nil || got != filepath.Join(dir2, ".devcontainer.json") {
		t.Fatalf("Find = %q, %v", got, err)
	}
}

func TestParseFixture(t *testing.T) {
	c, err := Parse("testdata/full.jsonc")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "Go" || c.Image != "mcr.microsoft.com/devcontainers/go:1" || c.RemoteUser != "vscode" ||
		c.ContainerUser != "vscode" || c.WorkspaceFolder != "/workspaces/app" {
		t.Fatalf("unexpected config: %+v", c)
	}
	cust, ok := c.Raw["customizations"].(map[string]any)
	if !ok {
		t.Fatalf("Raw[customizations] = %#v", c.Raw["customizations"])
	}
	if _, ok := cust["vscode"]; !ok {
		t.Fatalf("Raw lost nested content: %#v", cust)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Config
		wantErr string // substring of the user message; FILE is replaced by the path
	}{
		{name: "empty object", in: "{}", want: Config{}},
		{name: "image only", in: `{"image":"debian:12"}`, want: Config{Image: "debian:12"}},
		{name: "comments", in: "// c\n{\n  # not a comment\n}", wantErr: "FILE:3:3: "},
		{name: "line comment and trailing comma", in: "{\n// user\n\"remoteUser\": \"dev\",\n}\n", want: Config{RemoteUser: "dev"}},
		{name: "null is unset", in: `{"image": null}`, want: Config{}},
		{name: "missing comma", in: "{\n  \"image\": \"a\"\n  \"name\": \"b\"\n}", wantErr: "FILE:3:3: "},
		{name: "unterminated", in: "{\n \"image\": \"a\",", wantErr: "FILE:2:"},
		{name: "not an object", in: `["image"]`, wantErr: "FILE:1:1: top-level value must be an object"},
		{name: "wrong type", in: `{"image": 3}`, wantErr: `"image" must be a string, not a number`},
		{name: "empty file", in: "", wantErr: "FILE:1:1: "},
		{name: "trailing garbage", in: "{} x", wantErr: "FILE:1:4: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "devcontainer.json")
			if err := os.WriteFile(p, []byte(tt.in), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := Parse(p)
			if tt.wantErr != "" {
				want := strings.ReplaceAll(tt.wantErr, "FILE", p)
				msg, ok := usererr.Message(err)
				if !ok || !strings.Contains(msg, want) {
					t.Fatalf("Parse error = %v (user message %q), want user error containing %q", err, msg, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got := Config{Name: c.Name, Image: c.Image, RemoteUser: c.RemoteUser, ContainerUser: c.ContainerUser, WorkspaceFolder: c.WorkspaceFolder}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse = %+v, want %+v", got, tt.want)
			}
			if c.Raw == nil {
				t.Fatal("Raw is nil")
			}
		})
	}
}

func TestParseMissingFile(t *testing.T) {
	_, err := Parse(filepath.Join(t.TempDir(), "nope.json"))
	if _, ok := usererr.Message(err); !ok {
		t.Fatalf("Parse of a missing file = %v, want a user error", err)
	}
}

func TestParseTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "devcontainer.json")
	big := "{\"name\": \"" + strings.Repeat("a", maxSize) + "\"}"
	if err := os.WriteFile(p, []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Parse = %v, want size error", err)
	}
}

func FuzzParse(f *testing.F) {
	seeds := []string{
		"{}", `{"image":"x"}`, "// c\n{/* b */\"a\":[1,2,],}", "{\"a\":", "[", `"s"`, "null",
		"{\"image\": 3}", "\xff", "{\"a\":\"\\u12\"}", "/*", "{} {}",
	}
	if b, err := os.ReadFile("testdata/full.jsonc"); err == nil {
		seeds = append(seeds, string(b))
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseBytes("f.json", data)
		if err != nil {
			if _, ok := usererr.Message(err); !ok {
				t.Fatalf("error is not user-visible: %v", err)
			}
			return
		}
		if c == nil || c.Raw == nil {
			t.Fatal("nil config without error")
		}
	})
}
