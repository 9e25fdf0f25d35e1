package termsafe

import (
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "clone failed: repository not found", "clone failed: repository not found"},
		{"unicode kept", "größe 日本 ✓", "größe 日本 ✓"},
		{"newline and tab kept", "remote: a\n\tb", "remote: a\n\tb"},
		{"OSC 52 clipboard write, BEL", "ok\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07done", "okdone"},
		{"OSC 52 clipboard write, ST", "ok\x1b]52;c;Y3VybA==\x1b\\done", "okdone"},
		{"OSC 0 window title", "\x1b]0;sudo password required\x07fatal", "fatal"},
		{"OSC 2 title, C1 OSC and ST", "a\u009d2;pwned\u009cb", "ab"},
		{"OSC 8 hyperlink keeps its text", "\x1b]8;;https://evil.test/\x1b\\click\x1b]8;;\x1b\\", "click"},
		{"unterminated OSC swallows the rest", "x\x1b]52;c;AAAA", "x"},
		{"CSI colour", "\x1b[1;31merror\x1b[0m", "error"},
		{"CSI cursor up and erase line", "good\x1b[1A\x1b[2Kforged", "goodforged"},
		{"CSI private mode", "\x1b[?1049hhidden", "hidden"},
		{"C1 CSI", "a\u009b31mb", "ab"},
		{"DCS", "a\x1bPq#0;2;0;0;0\x1b\\b", "ab"},
		{"APC", "a\x1b_Gf=100;AAAA\x1b\\b", "ab"},
		{"two-character escapes", "a\x1bcb\x1b(Bc\x1b7d", "abcd"},
		{"lone ESC at the end", "a\x1b", "a"},
		{"carriage return overwrite", "Status: FAILED\rStatus: OK    ", "Status: FAILEDStatus: OK    "},
		{"backspace, bell, NUL, DEL", "a\bb\x07c\x00d\x7fe", "abcde"},
		{"other C1 controls", "a\u0085b\u008dc", "abc"},
		{"bidi override", "file\u202egnp.exe", "filegnp.exe"},
		{"bidi isolate", "a\u2066b\u2069c", "abc"},
		{"invalid UTF-8 (raw 8-bit CSI)", "a\x9b31mb", "a\ufffd31mb"},
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("%s: String(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestLine(t *testing.T) {
	for in, want := range map[string]string{
		"one line":                       "one line",
		"row\nforged-env  RUNNING":       "row forged-env  RUNNING",
		"a\tb\r\nc":                      "a b  c",
		"\x1b]0;title\x07x\x1b[2J":       "x",
		"git: remote: \x1b[31mno\x1b[0m": "git: remote: no",
	} {
		if got := Line(in); got != want {
			t.Errorf("Line(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNoControlsSurvive feeds every byte after every introducer: whatever
// comes out has no C0 (but newline and tab), DEL, ESC or C1 character.
func TestNoControlsSurvive(t *testing.T) {
	prefixes := []string{"", "\x1b", "\x1b[", "\x1b]", "\x1bP", "\u009b", "\u009d", "\x1b[1;"}
	for _, p := range prefixes {
		for b := range 256 {
			for _, s := range []string{p + string(rune(b)) + "x", p + string([]byte{byte(b)}) + "y\x1b\\z"} {
				for _, out := range []string{String(s), Line(s)} {
					for _, r := range out {
						if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
							t.Fatalf("%q: control %U left in %q", s, r, out)
						}
					}
					if strings.ContainsRune(Line(s), '\n') {
						t.Fatalf("Line(%q) kept a newline", s)
					}
				}
			}
		}
	}
}

func TestIdempotent(t *testing.T) {
	in := "a\x1b]52;c;x\x07\u009b1m\n\x9bz\u202e"
	once := String(in)
	if twice := String(once); twice != once {
		t.Errorf("String not idempotent: %q then %q", once, twice)
	}
}
