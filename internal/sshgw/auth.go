package sshgw

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"
)

// authKey is the ssh.Permissions.ExtraData key of a connection's authResult.
type authKey struct{}

// authResult is what a successful certificate check yields.
type authResult struct {
	envID   string
	ownerID string
	keyID   string
	serial  uint64
	// userName is the certificate's UserNameExtension, for people only.
	userName string
	perms    certPerms
}

// certPerms are the optional permissions a user certificate grants.
type certPerms struct {
	pty            bool
	portForwarding bool
	agentForward   bool
}

// authenticate checks a user's certificate and resolves its environment.
// The error explains the refusal for the log; clients never see it.
func (g *Gateway) authenticate(ctx context.Context, key ssh.PublicKey) (*authResult, error) {
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return nil, errors.New("plain keys are refused, a certificate is required")
	}
	if cert.CertType != ssh.UserCert {
		return nil, errors.New("not a user certificate")
	}
	if !g.trustedUserCA(cert.SignatureKey) {
		return nil, fmt.Errorf("certificate %q signed by untrusted CA %s", cert.KeyId, ssh.FingerprintSHA256(cert.SignatureKey))
	}
	if len(cert.ValidPrincipals) != 1 {
		return nil, fmt.Errorf("certificate %q must name exactly one environment, has %d principals", cert.KeyId, len(cert.ValidPrincipals))
	}
	envID := cert.ValidPrincipals[0]
	checker := ssh.CertChecker{Clock: g.clock}
	if err := checker.CheckCert(envID, cert); err != nil {
		return nil, fmt.Errorf("certificate %q: %w", cert.KeyId, err)
	}
	owner := cert.Extensions[OwnerExtension]
	if owner == "" {
		return nil, fmt.Errorf("certificate %q has no %s extension", cert.KeyId, OwnerExtension)
	}
	// Refuse early what cannot succeed; the target is resolved again
	// after authentication, right before the dial (resolveAndDial).
	t, err := g.resolver.ResolveEnvironment(ctx, envID)
	if err != nil {
		return nil, fmt.Errorf("resolve environment %s: %w", envID, err)
	}
	if err := checkTarget(t, envID, owner); err != nil {
		return nil, fmt.Errorf("certificate %q: %w", cert.KeyId, err)
	}
	_, pty := cert.Extensions["permit-pty"]
	_, fwd := cert.Extensions["permit-port-forwarding"]
	_, agentFwd := cert.Extensions["permit-agent-forwarding"]
	return &authResult{
		envID:    envID,
		ownerID:  owner,
		keyID:    cert.KeyId,
		serial:   cert.Serial,
		userName: cert.Extensions[UserNameExtension],
		perms:    certPerms{pty: pty, portForwarding: fwd, agentForward: agentFwd},
	}, nil
}

func (g *Gateway) trustedUserCA(key ssh.PublicKey) bool {
	cas, _ := g.snapshot()
	b := key.Marshal()
	for _, ca := range cas {
		if bytes.Equal(ca.Marshal(), b) {
			return true
		}
	}
	return false
}
