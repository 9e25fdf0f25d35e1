// Package termsafe makes text that someone else controls safe to print on
// a terminal. Failure messages, names, labels, URLs and warnings reach the
// CLI from the server, and through it from git servers, registries and
// repositories; a terminal would obey control sequences hidden in them
// (set the window title, write the clipboard with OSC 52, move the cursor
// to overwrite what was printed before, hide text). String and Line
// remove every such sequence and keep the visible text.
//
// What is removed: C0 control characters (except newline and tab in
// String), DEL, escape sequences (CSI, OSC, DCS, SOS, PM, APC and the
// two-character ones) with their parameters, C1 control characters
// (U+0080–U+009F, whose CSI, OSC, DCS, SOS, PM and APC introducers start
// sequences too) and Unicode bidirectional overrides and isolates, which
// reorder what a reader sees. Bytes that are not UTF-8 become U+FFFD, so a
// terminal in an 8-bit mode cannot read them as C1 controls.
package termsafe

import (
	"strings"
	"unicode/utf8"
)

const (
	esc = 0x1b
	bel = 0x07
	// C1 introducers and string terminator, as code points.
	c1DCS = 0x90
	c1SOS = 0x98
	c1CSI = 0x9b
	c1ST  = 0x9c
	c1OSC = 0x9d
	c1PM  = 0x9e
	c1APC = 0x9f
)

// String returns s without terminal control sequences. Newlines and tabs
// stay, so multi-line messages keep their shape.
func String(s string) string { return clean(s, false) }

// Line returns s without terminal control sequences, with newlines, tabs
// and carriage returns turned into spaces: for table cells and one-line
// fields, where a newline could forge the next row.
func Line(s string) string { return clean(s, true) }

func clean(s string, oneLine bool) string {
	if safe(s, oneLine) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteRune(utf8.RuneError)
			i++
			continue
		case r == '\n' || r == '\t':
			if oneLine {
				b.WriteByte(' ')
			} else {
				b.WriteRune(r)
			}
		case r == '\r':
			if oneLine {
				b.WriteByte(' ')
			}
		case r == esc:
			i = skipEscape(s, i+n)
			continue
		case r == c1CSI:
			i = skipCSI(s, i+n)
			continue
		case r == c1OSC || r == c1DCS || r == c1SOS || r == c1PM || r == c1APC:
			i = skipString(s, i+n)
			continue
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || bidi(r):
			// Other controls: dropped.
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// safe reports whether s is printable as it is (the common case: no
// allocation).
func safe(s string, oneLine bool) bool {
	for _, r := range s {
		if r < 0x20 && (oneLine || (r != '\n' && r != '\t')) || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == utf8.RuneError || bidi(r) {
			return false
		}
	}
	return true
}

// bidi reports the Unicode bidirectional embeddings, overrides and isolates
// (U+202A–U+202E, U+2066–U+2069) and the marks U+200E, U+200F, U+061C.
func bidi(r rune) bool {
	return (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f || r == 0x061c
}

// skipEscape returns the index after the escape sequence whose ESC ended
// just before i.
func skipEscape(s string, i int) int {
	if i >= len(s) {
		return i
	}
	switch s[i] {
	case '[':
		return skipCSI(s, i+1)
	case ']', 'P', 'X', '^', '_':
		return skipString(s, i+1)
	}
	// nF/Fp/Fe/Fs: intermediate bytes 0x20–0x2F, then one final byte
	// 0x30–0x7E.
	for i < len(s) && s[i] >= 0x20 && s[i] <= 0x2f {
		i++
	}
	if i < len(s) && s[i] >= 0x30 && s[i] <= 0x7e {
		i++
	}
	return i
}

// skipCSI skips a control sequence's parameter and intermediate bytes
// (0x20–0x3F) and its final byte (0x40–0x7E).
func skipCSI(s string, i int) int {
	for i < len(s) && s[i] >= 0x20 && s[i] <= 0x3f {
		i++
	}
	if i < len(s) && s[i] >= 0x40 && s[i] <= 0x7e {
		i++
	}
	return i
}

// skipString skips a control string (OSC, DCS, SOS, PM, APC) up to and
// including its terminator: BEL, ESC \ or the C1 ST. An unterminated one
// runs to the end, as a terminal would swallow it.
func skipString(s string, i int) int {
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == bel || r == c1ST:
			return i + n
		case r == esc:
			if i+1 < len(s) && s[i+1] == '\\' {
				return i + 2
			}
			// Another sequence starts: the string ends here (xterm does
			// the same with a lone ESC).
			return i
		}
		i += n
	}
	return i
}
