package agent

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"strings"

	gossh "golang.org/x/crypto/ssh"
)

// readAuthorizedKeys parses an authorized_keys file. Lines marked
// cert-authority are skipped: only plain keys may connect.
func readAuthorizedKeys(path string) ([]gossh.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read authorized keys: %w", err)
	}
	var keys []gossh.PublicKey
	for len(bytes.TrimSpace(data)) > 0 {
		key, _, options, rest, err := gossh.ParseAuthorizedKey(data)
		if err != nil {
			// ParseAuthorizedKey skips bad lines; an error means none is left.
			break
		}
		data = rest
		if hasOption(options, "cert-authority") {
			continue
		}
		keys = append(keys, key)
	}
	return keys, nil
}

func hasOption(options []string, name string) bool {
	for _, o := range options {
		if strings.EqualFold(o, name) {
			return true
		}
	}
	return false
}

// keyAuthorized reports whether key is listed in the authorized keys file.
// The file is read on every attempt so the runner can rotate keys.
func keyAuthorized(path string, key gossh.PublicKey) (bool, error) {
	keys, err := readAuthorizedKeys(path)
	if err != nil {
		return false, err
	}
	want := key.Marshal()
	for _, k := range keys {
		if bytes.Equal(k.Marshal(), want) {
			return true, nil
		}
	}
	return false, nil
}

// loadHostKey reads a PEM/OpenSSH private key from path, or generates an
// ed25519 key when path is empty.
func loadHostKey(path string) (gossh.Signer, error) {
	if path == "" {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate host key: %w", err)
		}
		s, err := gossh.NewSignerFromKey(priv)
		if err != nil {
			return nil, fmt.Errorf("generate host key: %w", err)
		}
		return s, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read host key: %w", err)
	}
	s, err := gossh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("parse host key %s: %w", path, err)
	}
	return s, nil
}
