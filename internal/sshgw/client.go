package sshgw

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/crypto/ssh"
)

// hostCertAlgorithms are the host key algorithms a client accepts from a
// gateway: certificates only.
var hostCertAlgorithms = []string{
	ssh.CertAlgoED25519v01,
	ssh.CertAlgoECDSA256v01,
	ssh.CertAlgoECDSA384v01,
	ssh.CertAlgoECDSA521v01,
	ssh.CertAlgoRSASHA512v01,
	ssh.CertAlgoRSASHA256v01,
}

// ClientConfig returns a client configuration that authenticates with cert
// (whose key is signer's) and accepts only a gateway host certificate signed
// by hostCA for HostPrincipal. The user name is irrelevant to the gateway.
func ClientConfig(signer ssh.Signer, cert *ssh.Certificate, hostCA ssh.PublicKey) *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User: "cove",
		Auth: []ssh.AuthMethod{ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
			if signer == nil || cert == nil {
				return nil, errors.New("no ssh certificate")
			}
			cs, err := ssh.NewCertSigner(cert, signer)
			if err != nil {
				return nil, fmt.Errorf("ssh certificate: %w", err)
			}
			return []ssh.Signer{cs}, nil
		})},
		HostKeyCallback:   HostKeyCallback(hostCA, nil),
		HostKeyAlgorithms: hostCertAlgorithms,
		Timeout:           30 * time.Second,
	}
}

// HostKeyCallback accepts only a valid host certificate for HostPrincipal
// signed by hostCA. clock defaults to time.Now.
func HostKeyCallback(hostCA ssh.PublicKey, clock func() time.Time) ssh.HostKeyCallback {
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		if hostCA == nil {
			return errors.New("ssh gateway host key: no host CA to verify it")
		}
		cert, ok := key.(*ssh.Certificate)
		if !ok {
			return fmt.Errorf("ssh gateway %s offered a plain host key, not a certificate", hostname)
		}
		if cert.CertType != ssh.HostCert {
			return fmt.Errorf("ssh gateway %s offered a non-host certificate", hostname)
		}
		if !bytes.Equal(cert.SignatureKey.Marshal(), hostCA.Marshal()) {
			return fmt.Errorf("ssh gateway %s host certificate is signed by an unknown CA %s", hostname, ssh.FingerprintSHA256(cert.SignatureKey))
		}
		checker := ssh.CertChecker{Clock: clock}
		if err := checker.CheckCert(HostPrincipal, cert); err != nil {
			return fmt.Errorf("ssh gateway %s host certificate: %w", hostname, err)
		}
		return nil
	}
}
