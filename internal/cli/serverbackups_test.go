package cli

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/testutil"
	"github.com/spf13/pflag"
)

func backupFlags(t *testing.T, args ...string) serverBackupOptions {
	t.Helper()
	var o serverBackupOptions
	f := pflag.NewFlagSet("server", pflag.ContinueOnError)
	addServerBackupFlags(f, &o)
	if err := f.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o
}

// TestServerBackupStorageFlags: the default is a directory under the data
// directory; S3 takes its secret from a file or the environment (never a
// flag), and a half or contradictory setting is refused with a message
// naming the flags — never the secret.
func TestServerBackupStorageFlags(t *testing.T) {
	t.Setenv(envBackupS3Secret, "")
	data := t.TempDir()
	st, err := backupFlags(t).storage(data)
	if err != nil || st.GetKind() != "dir" || st.GetDir() != filepath.Join(data, "backups") {
		t.Fatalf("default: %v, %v", st, err)
	}
	if st, err := backupFlags(t, "--backups=false").storage(data); err != nil || st != nil {
		t.Fatalf("--backups=false: %v, %v; want no storage", st, err)
	}
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("s3cr3t-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err = backupFlags(t, "--backup-s3-bucket", "b", "--backup-s3-endpoint", "http://127.0.0.1:1", "--backup-s3-access-key-id", "AK",
		"--backup-s3-secret-access-key-file", secretFile, "--backup-s3-path-style", "--backup-s3-prefix", "cove/").storage(data)
	if err != nil || st.GetKind() != "s3" || st.GetSecretAccessKey() != "s3cr3t-value" || !st.GetPathStyle() || st.GetPrefix() != "cove/" || st.GetRegion() != "us-east-1" {
		t.Fatalf("s3 with a secret file: %v", err)
	}
	t.Setenv(envBackupS3Secret, "from-env")
	if st, err := backupFlags(t, "--backup-s3-bucket", "b", "--backup-s3-access-key-id", "AK").storage(data); err != nil || st.GetSecretAccessKey() != "from-env" {
		t.Fatalf("s3 with the secret in the environment: %v", err)
	}
	t.Setenv(envBackupS3Secret, "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--backup-dir", "/x", "--backup-s3-bucket", "b"}, "alternatives"},
		{[]string{"--backup-s3-endpoint", "http://127.0.0.1:1"}, "--backup-s3-bucket is required"},
		{[]string{"--backup-s3-bucket", "b", "--backup-s3-access-key-id", "AK"}, "together"},
		{[]string{"--backup-s3-bucket", "b", "--backup-s3-secret-access-key-file", filepath.Join(t.TempDir(), "missing")}, "--backup-s3-secret-access-key-file"},
	} {
		_, err := backupFlags(t, c.args...).storage(data)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%v: %v; want an error mentioning %q", c.args, err, c.want)
		}
	}
	// There is no flag that takes the secret itself.
	f := pflag.NewFlagSet("server", pflag.ContinueOnError)
	addServerBackupFlags(f, &serverBackupOptions{})
	if f.Lookup("backup-s3-secret-access-key") != nil {
		t.Error("a flag takes the S3 secret: it would show in ps and shell history")
	}
}

// TestServerRefusesUnreachableBackupStorage: a server whose S3 storage does
// not answer fails to start, saying which storage and how to fix or
// disable it — without the secret.
func TestServerRefusesUnreachableBackupStorage(t *testing.T) {
	t.Setenv(envBackupS3Secret, "s3cr3t-value")
	o := backupFlags(t, "--backup-s3-bucket", "b", "--backup-s3-endpoint", "http://"+testutil.RefusedAddr(t), "--backup-s3-path-style",
		"--backup-s3-access-key-id", "AK")
	var cfg server.Config
	err := o.apply(testutil.Context(t), t.TempDir(), slog.New(slog.DiscardHandler), &cfg)
	if err == nil || !strings.Contains(err.Error(), `S3 bucket "b"`) || !strings.Contains(err.Error(), "--backups=false") || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("unreachable storage: %v", err)
	}
	if cfg.BackupStorage != nil || cfg.BackupStore != nil {
		t.Fatal("a failed check left storage in the config")
	}
	// A directory is made (private) and works.
	dir := filepath.Join(t.TempDir(), "b")
	o = backupFlags(t, "--backup-dir", dir)
	if err := o.apply(testutil.Context(t), t.TempDir(), slog.New(slog.DiscardHandler), &cfg); err != nil || cfg.BackupStore == nil || cfg.BackupStorage.GetDir() != dir {
		t.Fatalf("directory storage: %v", err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("backup directory: %v, mode %v; want 0700", err, fi.Mode())
	}
}

// TestS3SecretNotInherited (review REV-8): the S3 secret given in the
// environment is taken out of it when the server reads its options
// (whether or not backups are on), so no child started afterwards — in
// `cove up` buildkitd, runc and the unpack child share this process's
// environment — can read it from its own environment.
func TestS3SecretNotInherited(t *testing.T) {
	sh, err := exec.LookPath("env")
	if err != nil {
		t.Skip("needs env(1)")
	}
	for _, args := range [][]string{
		{"--backup-s3-bucket", "b", "--backup-s3-access-key-id", "AK"},
		{"--backups=false"},
	} {
		t.Setenv(envBackupS3Secret, "s3cr3t-value")
		st, err := backupFlags(t, args...).storage(t.TempDir())
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if len(args) > 1 && st.GetSecretAccessKey() != "s3cr3t-value" {
			t.Fatalf("%v: the secret from the environment was not used", args)
		}
		if v, ok := os.LookupEnv(envBackupS3Secret); ok {
			t.Errorf("%v: $%s still set (%d bytes) after the options were read", args, envBackupS3Secret, len(v))
		}
		out, err := exec.Command(sh).Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "s3cr3t") || strings.Contains(string(out), envBackupS3Secret) {
			t.Errorf("%v: a child process sees the secret in its environment", args)
		}
	}
}
