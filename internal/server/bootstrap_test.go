package server_test

import (
	"context"
	"testing"
)

func TestBootstrapReusesValidToken(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	u, tok, err := h.srv.Bootstrap(ctx, "alice", "")
	if err != nil || u.Role != "owner" || tok == "" {
		t.Fatalf("first bootstrap: %+v %q %v", u, tok, err)
	}
	u2, tok2, err := h.srv.Bootstrap(ctx, "alice", tok)
	if err != nil || u2.ID != u.ID || tok2 != tok {
		t.Fatalf("restart did not reuse the valid token: %q vs %q (%v)", tok2, tok, err)
	}
	_, tok3, err := h.srv.Bootstrap(ctx, "alice", "cove_pat_bogus")
	if err != nil || tok3 == tok || tok3 == "cove_pat_bogus" {
		t.Fatalf("invalid token reused: %q (%v)", tok3, err)
	}
	if got, err := h.srv.TokenUser(ctx, tok3); err != nil || got.ID != u.ID {
		t.Fatalf("new token: %+v %v", got, err)
	}
	// A token of another user is not reused for this one.
	_, bobTok, _ := h.srv.Bootstrap(ctx, "bob", "")
	if _, again, _ := h.srv.Bootstrap(ctx, "alice", bobTok); again == bobTok {
		t.Fatal("bob's token handed to alice")
	}
}
