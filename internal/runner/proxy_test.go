package runner

import (
	"testing"

	covev1 "github.com/covedev/cove/proto/cove/v1"
)

func TestPortURL(t *testing.T) {
	env := &covev1.Environment{Id: "abc123"}
	r := &Runner{proxyURL: "https://runner1:7743"}
	if got := r.portURL(env, 3000); got != "https://runner1:7743/p/abc123/3000/" {
		t.Fatalf("path form: %s", got)
	}
	r.cfg.ProxyDomain = "dev.example.com"
	if got := r.portURL(env, 3000); got != "https://3000--abc123.dev.example.com:7743/" {
		t.Fatalf("host form: %s", got)
	}
	r.proxyURL = ""
	if got := r.portURL(env, 3000); got != "" {
		t.Fatalf("no proxy: %s", got)
	}
}
