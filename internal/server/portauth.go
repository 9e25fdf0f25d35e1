package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/covedev/cove/internal/store"
)

// Signed tokens for browser access to ports. Both kinds are
// prefix + base64url(JSON claims) + "." + base64url(HMAC-SHA256(prefix+payload)),
// signed with a key only the server holds; the prefix is signed too, so one
// kind cannot pass for the other.
const (
	// PrefixPortToken marks a port session token: one user, one
	// environment, one port, a few minutes. The runner's proxy keeps it in
	// a cookie and presents it to AuthorizePortAccess.
	PrefixPortToken = "cove_port_"
	// prefixSession marks the server's browser login cookie.
	prefixSession = "cove_sess_"

	portTokenTTL = 10 * time.Minute
	sessionTTL   = 12 * time.Hour
)

var errBadSignedToken = errors.New("invalid or expired token")

// claims is what a signed token says.
type claims struct {
	User string `json:"u"`
	Env  string `json:"e,omitempty"`
	Port int    `json:"p,omitempty"`
	Exp  int64  `json:"x"` // unix seconds
	// Token is the personal access token a login session came from.
	Token string `json:"t,omitempty"`
}

// loadOrCreateKey reads the HMAC key at path (hex), creating a random one
// with mode 0600 if the file does not exist.
func loadOrCreateKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return loadOrCreateKey(path) // another process won the race
		}
		if err != nil {
			return nil, err
		}
		if _, err := f.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
			f.Close()
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) < 32 {
		return nil, fmt.Errorf("%s: not a hex key of at least 32 bytes", path)
	}
	return key, nil
}

func (s *Server) sign(prefix string, c claims) string {
	payload, _ := json.Marshal(c) // plain struct: cannot fail
	p := base64.RawURLEncoding.EncodeToString(payload)
	return prefix + p + "." + base64.RawURLEncoding.EncodeToString(s.mac(prefix, p))
}

func (s *Server) mac(prefix, payload string) []byte {
	m := hmac.New(sha256.New, s.portKey)
	m.Write([]byte(prefix))
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// verify checks tok's prefix, signature and expiry and returns its claims.
func (s *Server) verify(prefix, tok string) (claims, error) {
	rest, ok := strings.CutPrefix(tok, prefix)
	if !ok {
		return claims{}, errBadSignedToken
	}
	p, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return claims{}, errBadSignedToken
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(prefix, p)) {
		return claims{}, errBadSignedToken
	}
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return claims{}, errBadSignedToken
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil || c.User == "" {
		return claims{}, errBadSignedToken
	}
	if !s.now().Before(time.Unix(c.Exp, 0)) {
		return claims{}, errBadSignedToken
	}
	return c, nil
}

// IssuePortToken returns a port session token letting userID reach port of
// environment envID through the runner's proxy for a few minutes.
func (s *Server) IssuePortToken(userID, envID string, port int) string {
	return s.sign(PrefixPortToken, claims{User: userID, Env: envID, Port: port, Exp: s.now().Add(portTokenTTL).Unix()})
}

// verifyPortToken returns the user a port token was issued to, if it is
// valid for exactly envID and port, and when it expires.
func (s *Server) verifyPortToken(tok, envID string, port int) (string, time.Time, error) {
	c, err := s.verify(PrefixPortToken, tok)
	if err != nil {
		return "", time.Time{}, err
	}
	if c.Env != envID || c.Port != port {
		return "", time.Time{}, errBadSignedToken
	}
	return c.User, time.Unix(c.Exp, 0), nil
}

// issueSession is the browser login cookie for the user of p, bound to the
// token p logged in with: it expires no later than that token, and stops
// working when the token is revoked.
func (s *Server) issueSession(p principal) string {
	exp := s.now().Add(sessionTTL)
	c := claims{User: p.user.ID}
	if p.token != nil {
		c.Token = p.token.ID
		if !p.token.ExpiresAt.IsZero() && p.token.ExpiresAt.Before(exp) {
			exp = p.token.ExpiresAt
		}
	}
	c.Exp = exp.Unix()
	return s.sign(prefixSession, c)
}

// verifySession returns the user a login cookie is for, if the cookie is
// valid and the token it came from still is (sessions made before they
// were bound to a token are not: their users log in again).
func (s *Server) verifySession(ctx context.Context, tok string) (string, error) {
	c, err := s.verify(prefixSession, tok)
	if err != nil {
		return "", err
	}
	if c.Token == "" {
		return "", errBadSignedToken
	}
	t, err := s.store.GetToken(ctx, c.Token)
	if errors.Is(err, store.ErrNotFound) {
		return "", errBadSignedToken
	}
	if err != nil {
		return "", fmt.Errorf("session token: %w", err)
	}
	if t.UserID != c.User || (!t.ExpiresAt.IsZero() && s.now().After(t.ExpiresAt)) {
		return "", errBadSignedToken
	}
	return c.User, nil
}
