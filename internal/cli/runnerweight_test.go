package cli

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/testutil"
)

// TestRunnerCPUWeightRefused: a --runner-cpu-weight the kernel cannot take
// is refused at start, saying what is allowed, before anything is set up.
func TestRunnerCPUWeightRefused(t *testing.T) {
	testutil.RequireRoot(t, "runRunner checks for root first")
	for _, w := range []int{-1, 10001} {
		err := runRunner(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), runnerOptions{runnerCPUWeight: w})
		if err == nil || !strings.Contains(err.Error(), "want 0 (off) or 1 to 10000") {
			t.Errorf("weight %d: %v", w, err)
		}
	}
}
