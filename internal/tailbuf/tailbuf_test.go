package tailbuf

import (
	"strings"
	"testing"
)

func TestBufferKeepsTheEnd(t *testing.T) {
	b := &Buffer{Max: 5}
	for _, w := range []string{"ab", "cd", "efg", "", "h"} {
		if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", w, n, err)
		}
	}
	if got := b.String(); got != "defgh" {
		t.Fatalf("kept %q, want defgh", got)
	}
	b.Write([]byte(strings.Repeat("x", 100) + "12345"))
	if got := b.String(); got != "12345" {
		t.Fatalf("after a long write kept %q", got)
	}
}
