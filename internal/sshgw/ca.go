// Package sshgw holds cove's SSH certificate authority and the runner's SSH
// gateway.
//
// The server is the only credential issuer: its CA signs short-lived user
// certificates, each scoped to one environment, and host certificates for the
// runners' gateway host keys. A runner's Gateway accepts SSH connections,
// checks the user's certificate against the trusted CA and the environment's
// owner, and proxies the whole SSH session (channels, requests, port
// forwards) to the environment's agent over a unix socket.
package sshgw

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/covedev/cove/internal/usererr"
)

// HostPrincipal is the single principal of every gateway host certificate.
// Clients verify gateways with `HostKeyAlias cove-gateway` and a known_hosts
// line `@cert-authority cove-gateway <CA public key>`.
const HostPrincipal = "cove-gateway"

// OwnerExtension is the user certificate extension naming the environment's
// owner (a user id).
const OwnerExtension = "owner@cove"

// clockSkew is how far in the past a certificate's validity starts, to
// tolerate clocks that disagree a little.
const clockSkew = time.Minute

// userCertExtensions are the permissions granted by every user certificate,
// besides OwnerExtension.
var userCertExtensions = []string{
	"permit-pty",
	"permit-port-forwarding",
	"permit-user-rc",
}

// CA is an SSH certificate authority backed by an ed25519 key.
type CA struct {
	signer ssh.Signer
	now    func() time.Time
}

// LoadOrCreateCA loads the CA private key (OpenSSH PEM) at path, creating a
// new ed25519 key with mode 0600 if the file does not exist. An existing key
// that is readable by group or others is refused.
func LoadOrCreateCA(path string) (*CA, error) {
	signer, err := LoadOrCreateKey(path, "cove ssh ca")
	if err != nil {
		return nil, err
	}
	return &CA{signer: signer, now: time.Now}, nil
}

// LoadOrCreateKey loads the ed25519 private key (OpenSSH PEM) at path,
// creating it with mode 0600 if the file does not exist. An existing key
// that is readable by group or others is refused. Concurrent creators end
// up with the same key.
func LoadOrCreateKey(path, comment string) (ssh.Signer, error) {
	for range 2 {
		signer, err := loadKey(path)
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			return signer, err
		}
		if err := createKey(path, comment); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		// Created (or lost a race against another creator): load it.
	}
	return nil, fmt.Errorf("load ssh key %s: key disappeared while creating it", path)
}

func loadKey(path string) (ssh.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat ssh key %s: %w", path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, usererr.New("ssh key %s is accessible by other users (mode %#o); run chmod 600 on it", path, st.Mode().Perm())
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read ssh key %s: %w", path, err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, usererr.Wrap(err, "ssh key %s is not a valid OpenSSH private key: %v", path, err)
	}
	return signer, nil
}

// createKey writes a new key to path without ever replacing an existing file.
func createKey(path, comment string) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate ssh key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return fmt.Errorf("marshal ssh key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create ssh key directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".key-*")
	if err != nil {
		return fmt.Errorf("create ssh key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod ssh key: %w", err)
	}
	if _, err := tmp.Write(pem.EncodeToMemory(block)); err != nil {
		tmp.Close()
		return fmt.Errorf("write ssh key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync ssh key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close ssh key: %w", err)
	}
	// Link fails if path exists, so a concurrent creator never loses its key.
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("install ssh key: %w", err)
	}
	return nil
}

// PublicKey returns the CA's public key.
func (c *CA) PublicKey() ssh.PublicKey { return c.signer.PublicKey() }

// AuthorizedKey returns the CA's public key as one authorized_keys line
// without the trailing newline ("ssh-ed25519 AAAA...").
func (c *CA) AuthorizedKey() string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(c.signer.PublicKey())))
}

// SignUserCert signs a user certificate for pub valid for ttl, allowing its
// holder into environment envID owned by ownerID (and nothing else).
func (c *CA) SignUserCert(pub ssh.PublicKey, envID, ownerID string, ttl time.Duration) (*ssh.Certificate, error) {
	return c.SignUserCertNamed(pub, envID, ownerID, "", ttl)
}

// SignUserCertNamed is SignUserCert with the user's name in the
// certificate (UserNameExtension), which the gateway shows in activity.
func (c *CA) SignUserCertNamed(pub ssh.PublicKey, envID, ownerID, userName string, ttl time.Duration) (*ssh.Certificate, error) {
	if envID == "" || ownerID == "" {
		return nil, errors.New("sign user certificate: environment and owner are required")
	}
	exts := map[string]string{OwnerExtension: ownerID}
	if userName != "" {
		exts[UserNameExtension] = userName
	}
	for _, e := range userCertExtensions {
		exts[e] = ""
	}
	cert, err := c.sign(pub, ssh.UserCert, []string{envID}, exts, ttl)
	if err != nil {
		return nil, fmt.Errorf("sign user certificate for %s: %w", envID, err)
	}
	return cert, nil
}

// SignHostCert signs a host certificate for a gateway's host key pub, with
// the single principal HostPrincipal, valid for ttl.
func (c *CA) SignHostCert(pub ssh.PublicKey, ttl time.Duration) (*ssh.Certificate, error) {
	cert, err := c.sign(pub, ssh.HostCert, []string{HostPrincipal}, nil, ttl)
	if err != nil {
		return nil, fmt.Errorf("sign host certificate: %w", err)
	}
	return cert, nil
}

func (c *CA) sign(pub ssh.PublicKey, certType uint32, principals []string, exts map[string]string, ttl time.Duration) (*ssh.Certificate, error) {
	if pub == nil {
		return nil, errors.New("no public key")
	}
	if _, ok := pub.(*ssh.Certificate); ok {
		return nil, errors.New("public key is a certificate")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("invalid lifetime %s", ttl)
	}
	var serial [8]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return nil, fmt.Errorf("random serial: %w", err)
	}
	now := c.now()
	cert := &ssh.Certificate{
		Key:             pub,
		Serial:          binary.BigEndian.Uint64(serial[:]),
		CertType:        certType,
		KeyId:           keyID(certType, principals, exts),
		ValidPrincipals: principals,
		ValidAfter:      uint64(now.Add(-clockSkew).Unix()),
		ValidBefore:     uint64(now.Add(ttl).Unix()),
		Permissions:     ssh.Permissions{Extensions: exts},
	}
	if err := cert.SignCert(rand.Reader, c.signer); err != nil {
		return nil, err
	}
	return cert, nil
}

func keyID(certType uint32, principals []string, exts map[string]string) string {
	if certType == ssh.HostCert {
		return "cove:host"
	}
	return fmt.Sprintf("cove:owner=%s:env=%s", exts[OwnerExtension], principals[0])
}
