package portproxy

import (
	"net/http/httptest"
	"testing"
)

func TestRequestURLHonoursForwardedProto(t *testing.T) {
	r := httptest.NewRequest("GET", "http://runner:7743/p/env/3000/x?y=1", nil)
	if got := requestURL(r); got != "http://runner:7743/p/env/3000/x?y=1" {
		t.Fatalf("plain: %s", got)
	}
	r.Header.Set("X-Forwarded-Proto", "https")
	if got := requestURL(r); got != "https://runner:7743/p/env/3000/x?y=1" {
		t.Fatalf("behind a TLS proxy: %s", got)
	}
	r.Header.Set("X-Forwarded-Proto", "gopher")
	if got := requestURL(r); got != "http://runner:7743/p/env/3000/x?y=1" {
		t.Fatalf("bogus scheme taken: %s", got)
	}
}
