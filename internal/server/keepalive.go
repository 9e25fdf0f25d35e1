package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/autostop"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	// maxLeases is the most keep-alive leases an environment holds.
	maxLeases = 10
	// maxLeaseDuration bounds a lease when the class sets no maximum
	// lifetime.
	maxLeaseDuration = 7 * 24 * time.Hour
	// maxLeaseReason is the longest reason, in characters.
	maxLeaseReason = 200
)

// KeepAlive takes, replaces or ends the caller's keep-alive lease
// (`cove env keepalive NAME --for 2h --reason "training run"`).
func (e *envService) KeepAlive(ctx context.Context, req *connect.Request[covev1.KeepAliveRequest]) (*connect.Response[covev1.KeepAliveResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	secs := req.Msg.GetDurationSeconds()
	reason := req.Msg.GetReason()
	switch {
	case secs < 0:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("durationSeconds: %d is negative; use 0 to end your lease", secs))
	case utf8.RuneCountInString(reason) > maxLeaseReason || !utf8.ValidString(reason):
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("reason: at most %d characters of UTF-8 text", maxLeaseReason))
	case strings.IndexFunc(reason, unicode.IsControl) >= 0:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("reason: contains %s; use one line of text", controlCharText))
	}
	env, err := e.s.lookup(ctx, u, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	longest := maxLeaseDuration
	if secs > 0 {
		runners, err := e.s.store.ListRunners(ctx)
		if err != nil {
			return nil, err
		}
		caps := classCaps(runners, env.GetSpec().GetClassId(), env.GetMetadata().GetRunnerId())
		if l := secs2dur(caps.GetMaxLifetimeSeconds()); l > 0 {
			longest = min(longest, l)
		}
		if secs2dur(secs) > longest {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(
				"a lease may last at most %s here (%s asked); ask for less, and take another lease later if you need more",
				autostop.Format(longest), autostop.Format(secs2dur(secs))))
		}
	}
	env, err = e.s.store.UpdateEnvironment(ctx, env.Id, func(env *covev1.Environment) error {
		name := env.GetMetadata().GetName()
		switch env.GetSpec().GetDesiredPhase() {
		case phaseDeleted:
			return usererr.New("environment %q is being deleted", name)
		case phaseStopped:
			if secs > 0 {
				return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
					"environment %q is stopped: start it first (`cove env start %s`), then keep it alive", name, name))
			}
		}
		now := e.s.now()
		leases := slices.DeleteFunc(liveLeases(env.Spec.Leases, now), func(l *covev1.Lease) bool { return l.GetHolder() == u.Name })
		if secs > 0 {
			if len(leases) >= maxLeases {
				return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
					"environment %q has %d keep-alive leases already, the most allowed; wait for one to expire or have its holder end it (`cove env keepalive %s --stop`)",
					name, len(leases), name))
			}
			leases = append(leases, &covev1.Lease{Holder: u.Name, Reason: reason, ExpiresAt: timestamppb.New(now.Add(secs2dur(secs)))})
		}
		env.Spec.Leases = leases
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.s.log.Info("keep-alive lease", "env", env.Id, "holder", u.Name, "seconds", secs, "reason", reason)
	if env, err = e.s.withClassCaps(ctx, env); err != nil { // autostop.go
		return nil, err
	}
	return connect.NewResponse(&covev1.KeepAliveResponse{Environment: env}), nil
}

func secs2dur(s int64) time.Duration {
	const most = int64(maxTimeoutSecs)
	return time.Duration(min(max(s, 0), most*100)) * time.Second
}
