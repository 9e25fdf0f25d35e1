package runner

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/atomicfile"
	"github.com/covedev/cove/internal/guest"
	"golang.org/x/crypto/ssh"
)

// agentKeys gives every container its own agent keys: the client key the
// runner (and its SSH gateway) authenticate with, and the host key the
// agent proves itself with. Both are derived from one runner secret and
// the container's id, so nothing per container is stored and a restarted
// runner derives the same keys. An agent accepts only its own container's
// client key and the runner accepts only that container's host key: a
// connection that reaches another environment's agent, by whatever
// route, fails the handshake both ways.
type agentKeys struct{ secret []byte }

// agentSecretFile holds the runner secret (32 random bytes, mode 0600).
const agentSecretFile = "agent_keys.secret"

func loadAgentKeys(dataDir string) (*agentKeys, error) {
	path := filepath.Join(dataDir, agentSecretFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b = make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		if err := atomicfile.Write(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("agent key secret: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("agent key secret: %w", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm()&0o077 != 0 || len(b) != 32 {
		return nil, fmt.Errorf("agent key secret %s must be 32 bytes, mode 0600", path)
	}
	return &agentKeys{secret: b}, nil
}

func (k *agentKeys) derive(purpose, id string) ed25519.PrivateKey {
	seed, err := hkdf.Key(sha256.New, k.secret, nil, "cove agent "+purpose+"|"+id, ed25519.SeedSize)
	if err != nil {
		panic(err) // only for impossible lengths
	}
	return ed25519.NewKeyFromSeed(seed)
}

func (k *agentKeys) signer(purpose, id string) ssh.Signer {
	s, err := ssh.NewSignerFromKey(k.derive(purpose, id))
	if err != nil {
		panic(err) // ed25519 keys are always valid signers
	}
	return s
}

// client is the key the runner logs in to container id's agent with.
func (k *agentKeys) client(id string) ssh.Signer { return k.signer("client", id) }

// host is container id's agent host key.
func (k *agentKeys) host(id string) ssh.Signer { return k.signer("host", id) }

// writeAgentKeys writes what container id's agent reads from its etc
// directory (mounted read-only at /.cove/etc): the one client key it
// accepts, and its host key, readable by the container's root (host uid
// owner) only.
func (k *agentKeys) write(etcDir, id string, owner uint32) error {
	if err := os.WriteFile(filepath.Join(etcDir, guest.RunnerKeysName), ssh.MarshalAuthorizedKey(k.client(id).PublicKey()), 0o644); err != nil {
		return err
	}
	blk, err := ssh.MarshalPrivateKey(k.derive("host", id), "cove agent "+id)
	if err != nil {
		return err
	}
	p := filepath.Join(etcDir, guest.HostKeyName)
	f, err := os.OpenFile(p+".new", os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, fs.ErrExist) { // left by a crash
		if err = os.Remove(p + ".new"); err == nil {
			f, err = os.OpenFile(p+".new", os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		}
	}
	if err != nil {
		return err
	}
	_, err = f.Write(pem.EncodeToMemory(blk))
	err = errors.Join(err, f.Chown(int(owner), int(owner)), f.Close())
	if err != nil {
		return err
	}
	return os.Rename(p+".new", p)
}

// endpoint is how the runner reaches container id's agent, listening on
// sock.
func (k *agentKeys) endpoint(sock, id string) agentclient.Endpoint {
	return agentclient.Endpoint{Socket: sock, Signer: k.client(id), HostKey: k.host(id).PublicKey()}
}

// listenAgent creates the unix socket a container's agent will serve on,
// at sock — in a directory only root can write and the environment never
// sees — and returns the listening descriptor to hand to the container
// (runtime.Spec.ExtraFiles). The runner dials sock; nothing the
// environment does can change where that leads.
func listenAgent(sock string) (*os.File, error) {
	if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	defer ln.Close()
	if err := os.Chmod(sock, 0o600); err != nil {
		return nil, err
	}
	return ln.File()
}
