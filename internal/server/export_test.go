package server

// OnStreamReleased calls f after a watch stream's slot is freed.
func OnStreamReleased(s *Server, f func(key string)) {
	s.streams.mu.Lock()
	defer s.streams.mu.Unlock()
	s.streams.released = f
}

// MaxRunnerWatches is the bound on a runner's assignment watches.
const MaxRunnerWatches = maxRunnerWatches

// Bounds of a reported status.
const (
	MaxReportedPorts    = maxReportedPorts
	MaxStatusMessage    = maxStatusMessage
	MaxStatusString     = maxStatusString
	TruncatedMarker     = truncatedMarker
	MaxReportedFeatures = maxReportedFeatures
	MaxReportedVolumes  = maxReportedVolumes
	MaxMapEntries       = maxMapEntries
)
