package image

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLayersPresent(t *testing.T) {
	s, err := NewStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		layers []string
		want   bool
	}{
		{[]string{a, b}, true},
		{nil, false}, // no image yet
		{[]string{a, filepath.Join(dir, "gone")}, false}, // collected
		{[]string{a, file}, false},                       // not a layer
	} {
		if got := s.LayersPresent(tt.layers); got != tt.want {
			t.Errorf("LayersPresent(%q) = %v, want %v", tt.layers, got, tt.want)
		}
	}
}
