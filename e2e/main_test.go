package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"

	"github.com/covedev/cove/internal/testutil/testimage"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/net/dns/dnsmessage"
)

// TestMain also serves as the "outside world" the networking test places in
// a network namespace it creates: the test binary re-runs itself there with
// COVE_E2E_ROLE=outside.
func TestMain(m *testing.M) {
	if os.Getenv("COVE_E2E_ROLE") == "outside" {
		outside()
		return
	}
	os.Exit(m.Run())
}

// outsideIP is the outside server's address (documentation range, inside the
// test's own namespace).
const outsideIP = "198.51.100.2"

// outside serves HTTP on :8000 (answers with the client's address, to show
// NAT) and DNS on :53 (outside.test → outsideIP) until killed.
func outside() {
	go func() {
		pc, err := net.ListenPacket("udp", ":53")
		if err != nil {
			fmt.Fprintln(os.Stderr, "dns:", err)
			os.Exit(1)
		}
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply, err := answer(buf[:n]); err == nil {
				_, _ = pc.WriteTo(reply, addr)
			}
		}
	}()
	// A registry with the busybox test image, for Dockerfile builds (which
	// run in their own network namespace and reach only "the internet").
	if bb, err := testimage.Busybox(); err == nil {
		if ln, err := net.Listen("tcp", ":5000"); err == nil {
			_, _ = testimage.ServeOn(ln, map[string]v1.Image{"test/busybox:latest": bb})
		}
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "outside saw %s\n", host)
	})
	fmt.Println("outside ready")
	if err := http.ListenAndServe(":8000", nil); err != nil {
		fmt.Fprintln(os.Stderr, "http:", err)
		os.Exit(1)
	}
}

func answer(q []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil, err
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) == 0 {
		return nil, fmt.Errorf("no question")
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
	_ = b.StartQuestions()
	_ = b.Question(qs[0])
	_ = b.StartAnswers()
	if qs[0].Name.String() == "outside.test." && qs[0].Type == dnsmessage.TypeA {
		ip := net.ParseIP(outsideIP).To4()
		_ = b.AResource(dnsmessage.ResourceHeader{Name: qs[0].Name, Class: dnsmessage.ClassINET, TTL: 60},
			dnsmessage.AResource{A: [4]byte{ip[0], ip[1], ip[2], ip[3]}})
	}
	return b.Finish()
}
