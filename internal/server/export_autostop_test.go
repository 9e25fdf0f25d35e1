package server

import "context"

// AutoStopOnce makes one auto-stop pass and returns how many environments
// it stopped.
func AutoStopOnce(ctx context.Context, s *Server) (int, error) { return s.autoStop(ctx) }
