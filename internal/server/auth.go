package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/store"
)

// Token prefixes tell kinds apart at a glance (and to secret scanners).
const (
	prefixUserToken   = "cove_pat_"
	prefixRunnerToken = "cove_rnr_"
	prefixJoinToken   = "cove_join_"
)

// NewToken returns a random secret with the given prefix.
func NewToken(prefix string) string {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// HashToken is how tokens are stored: hex SHA-256 (tokens are high-entropy,
// so no salt or slow hash is needed).
func HashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

type principalKey struct{}

// principal is who is calling: a user (with the token the call carried)
// or a runner.
type principal struct {
	user   *store.User
	token  *store.Token
	runner *store.Runner
}

func withPrincipal(ctx context.Context, p principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func userFrom(ctx context.Context) (store.User, error) {
	p, _ := ctx.Value(principalKey{}).(principal)
	if p.user == nil {
		return store.User{}, connect.NewError(connect.CodeUnauthenticated, errors.New("this call needs a user token (run `cove login`)"))
	}
	return *p.user, nil
}

// tokenFrom is the personal access token the call carried (nil for none).
func tokenFrom(ctx context.Context) *store.Token {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p.token
}

func runnerFrom(ctx context.Context) (store.Runner, error) {
	p, _ := ctx.Value(principalKey{}).(principal)
	if p.runner == nil {
		return store.Runner{}, connect.NewError(connect.CodeUnauthenticated, errors.New("this call needs a runner token"))
	}
	return *p.runner, nil
}

// authenticate resolves the bearer token, if any, to a principal. A request
// without a token passes with no principal (handlers decide); a request with
// a bad token is refused here.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		if h == "" {
			next.ServeHTTP(w, r)
			return
		}
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			writeAuthError(w, "authorization header must be `Bearer <token>`")
			return
		}
		p, err := s.resolveToken(r.Context(), strings.TrimSpace(tok))
		if err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				s.log.Error("resolve token", "err", err)
			}
			writeAuthError(w, "invalid or expired token")
			return
		}
		next.ServeHTTP(w, r.WithContext(withPrincipal(r.Context(), p)))
	})
}

func (s *Server) resolveToken(ctx context.Context, tok string) (principal, error) {
	hash := HashToken(tok)
	switch {
	case strings.HasPrefix(tok, prefixUserToken):
		t, err := s.store.GetTokenByHash(ctx, hash)
		if err != nil {
			return principal{}, err
		}
		if !t.ExpiresAt.IsZero() && s.now().After(t.ExpiresAt) {
			return principal{}, store.ErrNotFound
		}
		u, err := s.store.GetUser(ctx, t.UserID)
		if err != nil {
			return principal{}, err
		}
		return principal{user: &u, token: &t}, nil
	case strings.HasPrefix(tok, prefixRunnerToken):
		r, err := s.store.GetRunnerByTokenHash(ctx, hash)
		if err != nil {
			return principal{}, err
		}
		return principal{runner: &r}, nil
	}
	return principal{}, store.ErrNotFound
}

func writeAuthError(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte(`{"code":"unauthenticated","message":"` + msg + `"}`))
}
