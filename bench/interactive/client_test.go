package main

import (
	"slices"
	"strings"
	"testing"
)

// TestClientModes: -client both measures the laptop placement first (the
// one the targets are about), then the host; a typo is refused, saying
// what is allowed.
func TestClientModes(t *testing.T) {
	for flag, want := range map[string][]string{"both": {clientLaptop, clientHost}, "laptop": {clientLaptop}, "host": {clientHost}} {
		got, err := clientModes(flag)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("-client %s: %v, %v; want %v", flag, got, err, want)
		}
	}
	if _, err := clientModes("lap"); err == nil || !strings.Contains(err.Error(), "laptop, host or both") {
		t.Errorf("-client lap: %v", err)
	}
}
