package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Personal access tokens. A token never outlives the token that created it
// (a request without a TTL gets the creating token's expiry), TTLs are
// bounded, and revoking a token revokes the tokens it created.
const (
	maxTokenTTL     = 365 * 24 * time.Hour
	maxTokenNameLen = 64
)

// IssueUserToken creates a personal access token for u that no token
// created (an operator's, a test's); ttl 0 means it does not expire.
func (s *Server) IssueUserToken(ctx context.Context, u store.User, name string, ttl time.Duration) (string, error) {
	var exp time.Time
	if ttl > 0 {
		exp = s.now().Add(ttl)
	}
	tok, _, err := s.issueToken(ctx, u, name, "", exp)
	return tok, err
}

// issueToken creates a personal access token for u.
func (s *Server) issueToken(ctx context.Context, u store.User, name, parentID string, expires time.Time) (string, store.Token, error) {
	tok := NewToken(prefixUserToken)
	t := store.Token{ID: newID("tok-"), UserID: u.ID, Name: name, Hash: HashToken(tok), ParentID: parentID,
		CreatedAt: s.now(), ExpiresAt: expires}
	if err := s.store.CreateToken(ctx, t); err != nil {
		return "", store.Token{}, fmt.Errorf("create token: %w", err)
	}
	return tok, t, nil
}

// childExpiry is when a token created by parent (nil: none) for ttlSeconds
// expires: never for 0 unless the parent expires, then with the parent. A
// TTL that is negative, absurd or would outlive the parent is refused.
func (s *Server) childExpiry(parent *store.Token, ttlSeconds int64) (time.Time, error) {
	if ttlSeconds < 0 {
		return time.Time{}, invalidField("ttlSeconds", "%d is negative: give a number of seconds, or 0 for the longest allowed", ttlSeconds)
	}
	if ttlSeconds > int64(maxTokenTTL/time.Second) {
		return time.Time{}, invalidField("ttlSeconds", "%d is more than %d (%s); use 0 for a token that expires with the one making it",
			ttlSeconds, int64(maxTokenTTL/time.Second), maxTokenTTL)
	}
	now := s.now()
	var exp time.Time
	if ttlSeconds > 0 {
		exp = now.Add(time.Duration(ttlSeconds) * time.Second)
	}
	if parent == nil || parent.ExpiresAt.IsZero() {
		return exp, nil
	}
	if exp.IsZero() {
		return parent.ExpiresAt, nil
	}
	if exp.After(parent.ExpiresAt) {
		left := max(int64(parent.ExpiresAt.Sub(now)/time.Second), 0)
		return time.Time{}, invalidField("ttlSeconds", "a token cannot outlive the token that creates it, and yours expires at %s: ask for at most %d seconds, or 0 for the same expiry",
			parent.ExpiresAt.UTC().Format(time.RFC3339), left)
	}
	return exp, nil
}

func tokenName(name string) (string, error) {
	if name == "" {
		return "token", nil
	}
	if len(name) > maxTokenNameLen || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return "", invalidField("name", "at most %d characters, no control characters", maxTokenNameLen)
	}
	return name, nil
}

func toTokenProto(t store.Token, current *store.Token) *covev1.Token {
	p := &covev1.Token{Id: t.ID, Name: t.Name, CreatedAt: timestamppb.New(t.CreatedAt), ParentId: t.ParentID,
		Current: current != nil && current.ID == t.ID}
	if !t.ExpiresAt.IsZero() {
		p.ExpiresAt = timestamppb.New(t.ExpiresAt)
	}
	return p
}

func (us *userService) CreateToken(ctx context.Context, req *connect.Request[covev1.CreateTokenRequest]) (*connect.Response[covev1.CreateTokenResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	parent := tokenFrom(ctx)
	name, err := tokenName(req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	exp, err := us.s.childExpiry(parent, req.Msg.GetTtlSeconds())
	if err != nil {
		return nil, err
	}
	parentID := ""
	if parent != nil {
		parentID = parent.ID
	}
	us.s.quotaMu.Lock()
	defer us.s.quotaMu.Unlock()
	if err := us.s.checkTokenCapacity(ctx, u); err != nil {
		return nil, err
	}
	tok, t, err := us.s.issueToken(ctx, u, name, parentID, exp)
	if err != nil {
		return nil, err
	}
	us.s.log.Info("token created", "user", u.Name, "token", t.ID, "parent", parentID, "expires", t.ExpiresAt)
	return connect.NewResponse(&covev1.CreateTokenResponse{Token: tok, Info: toTokenProto(t, nil)}), nil
}

// checkTokenCapacity refuses a new token when u holds the most unexpired
// tokens allowed; expired ones are deleted first. The caller holds quotaMu.
func (s *Server) checkTokenCapacity(ctx context.Context, u store.User) error {
	max := s.cfg.Limits.TokensPerUser
	if max <= 0 {
		return nil
	}
	if err := s.store.DeleteExpiredTokens(ctx, s.now()); err != nil {
		return fmt.Errorf("delete expired tokens: %w", err)
	}
	toks, err := s.store.ListTokens(ctx, u.ID)
	if err != nil {
		return err
	}
	if len(toks) >= max {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"you have %d tokens, the most this server allows per user (%d): revoke some first (`cove token list`, `cove token revoke ID`)", len(toks), max))
	}
	return nil
}

func (us *userService) ListTokens(ctx context.Context, _ *connect.Request[covev1.ListTokensRequest]) (*connect.Response[covev1.ListTokensResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	toks, err := us.s.store.ListTokens(ctx, u.ID)
	if err != nil {
		return nil, err
	}
	cur := tokenFrom(ctx)
	out := &covev1.ListTokensResponse{}
	now := us.s.now()
	for _, t := range toks {
		if !t.ExpiresAt.IsZero() && now.After(t.ExpiresAt) {
			continue
		}
		out.Tokens = append(out.Tokens, toTokenProto(t, cur))
	}
	return connect.NewResponse(out), nil
}

func (us *userService) RevokeToken(ctx context.Context, req *connect.Request[covev1.RevokeTokenRequest]) (*connect.Response[covev1.RevokeTokenResponse], error) {
	u, err := userFrom(ctx)
	if err != nil {
		return nil, err
	}
	id := req.Msg.GetId()
	ids, err := us.s.store.DeleteToken(ctx, u.ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("you have no token %q (see `cove token list`)", id))
	}
	if err != nil {
		return nil, err
	}
	us.s.log.Info("tokens revoked", "user", u.Name, "tokens", ids)
	return connect.NewResponse(&covev1.RevokeTokenResponse{RevokedIds: ids}), nil
}
