package server_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/server"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

func (u *user) createToken(ttl int64) (*covev1.CreateTokenResponse, error) {
	resp, err := u.users.CreateToken(context.Background(), connect.NewRequest(&covev1.CreateTokenRequest{Name: "t", TtlSeconds: ttl}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func (u *user) whoami() error {
	_, err := u.users.WhoAmI(context.Background(), connect.NewRequest(&covev1.WhoAmIRequest{}))
	return err
}

func (u *user) tokens(t *testing.T) map[string]*covev1.Token {
	t.Helper()
	resp, err := u.users.ListTokens(context.Background(), connect.NewRequest(&covev1.ListTokensRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*covev1.Token{}
	for _, tok := range resp.Msg.Tokens {
		out[tok.Id] = tok
	}
	return out
}

// TestTokenCannotOutliveItsCreator (F14): the review's reproduction. A
// 60-second token asks for a token without a TTL (and for a long one, a
// user, a join token); nothing it makes outlives it, and once it expires
// what it made stops working too.
func TestTokenCannotOutliveItsCreator(t *testing.T) {
	clk := &testClock{t: time.Now()}
	h := newHarnessWith(t, func(c *server.Config) { c.Now = clk.Now })
	ctx := context.Background()
	alice := h.owner(t)
	short, err := alice.createToken(60)
	if err != nil {
		t.Fatal(err)
	}
	script := h.client(short.Token)

	child, err := script.createToken(0)
	if err != nil {
		t.Fatal(err)
	}
	toks := alice.tokens(t)
	parent, kid := toks[short.Info.Id], toks[child.Info.Id]
	if kid.ExpiresAt == nil || !kid.ExpiresAt.AsTime().Equal(parent.ExpiresAt.AsTime()) || kid.ParentId != parent.Id {
		t.Fatalf("TTL-less child of a 60 s token: %v, parent %v; want the parent's expiry", kid, parent)
	}
	if _, err := script.createToken(3600); code(err) != connect.CodeInvalidArgument || !contains(message(err), "ttlSeconds", "cannot outlive") {
		t.Fatalf("child asking for an hour: %v", err)
	}
	if shorter, err := script.createToken(30); err != nil || shorter.Info.ExpiresAt.AsTime().After(parent.ExpiresAt.AsTime()) {
		t.Fatalf("shorter child: %v %v", shorter, err)
	}
	bobResp, err := script.users.CreateUser(ctx, connect.NewRequest(&covev1.CreateUserRequest{Name: "bob"}))
	if err != nil {
		t.Fatal(err)
	}
	bob := h.client(bobResp.Msg.Token)
	for _, bt := range bob.tokens(t) {
		if bt.ExpiresAt == nil || bt.ExpiresAt.AsTime().After(parent.ExpiresAt.AsTime()) {
			t.Fatalf("user made by a 60 s token got token %v", bt)
		}
	}
	if _, err := script.runners.CreateJoinToken(ctx, connect.NewRequest(&covev1.CreateJoinTokenRequest{TtlSeconds: 7200})); code(err) != connect.CodeInvalidArgument {
		t.Fatalf("join token outliving its creator: %v", err)
	}
	jt, err := script.runners.CreateJoinToken(ctx, connect.NewRequest(&covev1.CreateJoinTokenRequest{}))
	if err != nil {
		t.Fatalf("default join token from a short token: %v", err)
	}

	// A minute later all of it is dead; alice's own token is not.
	clk.Add(61 * time.Second)
	for name, u := range map[string]*user{"short": script, "child": h.client(child.Token), "bob": bob} {
		if err := u.whoami(); code(err) != connect.CodeUnauthenticated {
			t.Errorf("%s token after its creator expired: %v", name, err)
		}
	}
	anon := h.client("")
	if _, err := anon.runners.JoinRunner(ctx, connect.NewRequest(&covev1.JoinRunnerRequest{JoinToken: jt.Msg.JoinToken, Name: "late"})); code(err) != connect.CodePermissionDenied {
		t.Errorf("join token after its creator expired: %v", err)
	}
	if err := alice.whoami(); err != nil {
		t.Fatalf("alice's token: %v", err)
	}
}

// TestTokenTTLValidation (F14): negative and overflowing TTLs used to mean
// "never expires"; now they are refused, naming the field, and nothing is
// created.
func TestTokenTTLValidation(t *testing.T) {
	h := newHarness(t)
	alice := h.owner(t)
	before := len(alice.tokens(t))
	for _, ttl := range []int64{-5, -1 << 63, 9223372036854775807, 9300000000, 1e12} {
		if _, err := alice.createToken(ttl); code(err) != connect.CodeInvalidArgument || !contains(message(err), "ttlSeconds") {
			t.Errorf("ttl %d: %v", ttl, err)
		}
		if _, err := alice.runners.CreateJoinToken(context.Background(), connect.NewRequest(&covev1.CreateJoinTokenRequest{TtlSeconds: ttl})); code(err) != connect.CodeInvalidArgument {
			t.Errorf("join token ttl %d: %v", ttl, err)
		}
	}
	if after := len(alice.tokens(t)); after != before {
		t.Fatalf("refused requests created tokens: %d -> %d", before, after)
	}
	// A valid TTL expires when asked.
	ok, err := alice.createToken(3600)
	if err != nil || ok.Info.ExpiresAt == nil || time.Until(ok.Info.ExpiresAt.AsTime()) > time.Hour {
		t.Fatalf("one-hour token: %v %v", ok, err)
	}
}

// TestTokenListAndRevoke (F14): tokens can be listed and revoked; a revoked
// token and every token it created stop working at once; nobody revokes
// another user's token.
func TestTokenListAndRevoke(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice := h.owner(t)
	bob := h.member(t, alice, "bob")
	a, err := alice.createToken(0)
	if err != nil {
		t.Fatal(err)
	}
	viaA := h.client(a.Token)
	b, err := viaA.createToken(0)
	if err != nil {
		t.Fatal(err)
	}
	toks := viaA.tokens(t)
	if len(toks) != 3 || !toks[a.Info.Id].Current || toks[b.Info.Id].ParentId != a.Info.Id || toks[b.Info.Id].Current {
		t.Fatalf("list: %v", toks)
	}
	if _, err := bob.users.RevokeToken(ctx, connect.NewRequest(&covev1.RevokeTokenRequest{Id: a.Info.Id})); code(err) != connect.CodeNotFound {
		t.Fatalf("bob revoking alice's token: %v", err)
	}
	if err := viaA.whoami(); err != nil {
		t.Fatalf("alice's token after bob's attempt: %v", err)
	}
	rev, err := alice.users.RevokeToken(ctx, connect.NewRequest(&covev1.RevokeTokenRequest{Id: a.Info.Id}))
	if err != nil || len(rev.Msg.RevokedIds) != 2 {
		t.Fatalf("revoke: %v %v", rev, err)
	}
	for name, tok := range map[string]string{"revoked": a.Token, "its child": b.Token} {
		if err := h.client(tok).whoami(); code(err) != connect.CodeUnauthenticated {
			t.Errorf("%s token still works: %v", name, err)
		}
	}
	if err := alice.whoami(); err != nil {
		t.Fatalf("alice's other token: %v", err)
	}
	if _, err := alice.users.RevokeToken(ctx, connect.NewRequest(&covev1.RevokeTokenRequest{Id: a.Info.Id})); code(err) != connect.CodeNotFound {
		t.Fatalf("revoking twice: %v", err)
	}
	if n := len(alice.tokens(t)); n != 1 {
		t.Fatalf("%d tokens left, want 1", n)
	}
}

// TestTokenCapPerUser: a user holds a bounded number of tokens.
func TestTokenCapPerUser(t *testing.T) {
	h := newHarnessWith(t, func(c *server.Config) { c.Limits = server.Limits{TokensPerUser: 3} })
	alice := h.owner(t) // holds one
	var last *covev1.CreateTokenResponse
	for range 2 {
		var err error
		if last, err = alice.createToken(0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.createToken(0); code(err) != connect.CodeResourceExhausted || !contains(message(err), "cove token revoke") {
		t.Fatalf("fourth token: %v", err)
	}
	if _, err := alice.users.RevokeToken(context.Background(), connect.NewRequest(&covev1.RevokeTokenRequest{Id: last.Info.Id})); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.createToken(0); err != nil {
		t.Fatalf("after revoking one: %v", err)
	}
}

// TestSSHCertificateWithinTokenLifetime: an SSH certificate asked for with
// a short token expires with it (certificates cannot be revoked).
func TestSSHCertificateWithinTokenLifetime(t *testing.T) {
	h := newHarness(t)
	alice := h.owner(t)
	if _, err := alice.create("demo", gitSpec("https://example.com/a.git")); err != nil {
		t.Fatal(err)
	}
	short, err := alice.createToken(120)
	if err != nil {
		t.Fatal(err)
	}
	_, pub := newKey(t)
	sc, err := h.client(short.Token).envs.SignSSHCertificate(context.Background(),
		connect.NewRequest(&covev1.SignSSHCertificateRequest{EnvironmentId: "demo", PublicKey: pub}))
	if err != nil {
		t.Fatal(err)
	}
	// Whole seconds: the certificate's ValidBefore is in seconds.
	if got, limit := sc.Msg.ExpiresAt.AsTime(), short.Info.ExpiresAt.AsTime().Truncate(time.Second).Add(time.Second); got.After(limit) {
		t.Fatalf("certificate valid until %s, token until %s", got, short.Info.ExpiresAt.AsTime())
	}
}
