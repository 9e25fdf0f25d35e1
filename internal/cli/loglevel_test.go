package cli

import (
	"log/slog"
	"testing"
)

func TestLogLevel(t *testing.T) {
	for name, want := range map[string]slog.Level{
		"": slog.LevelInfo, "debug": slog.LevelDebug, "DEBUG": slog.LevelDebug, "warn": slog.LevelWarn,
		"error": slog.LevelError, "info": slog.LevelInfo, "loud": slog.LevelInfo,
	} {
		if got := logLevel(name); got != want {
			t.Errorf("COVE_LOG_LEVEL=%q: %v, want %v", name, got, want)
		}
	}
}
