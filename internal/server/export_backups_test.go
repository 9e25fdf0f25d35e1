package server

import "context"

// MovesOnce makes one pass of the moves controller (pending moves,
// reschedules, deletions on lost runners), as the server's loop does.
func MovesOnce(ctx context.Context, s *Server) error { return s.reconcileMoves(ctx) }

// RunnersOnce makes one pass of runner liveness.
func RunnersOnce(ctx context.Context, s *Server) error { return s.reconcileRunners(ctx) }
