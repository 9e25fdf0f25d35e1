package agent

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pkg/sftp"
)

// ServeSFTP serves the SFTP protocol on in and out until the client goes
// away. It backs `cove agent sftp-server`, which the agent starts as the
// session user for the "sftp" subsystem (like OpenSSH's sftp-server), so
// files are created with that user's ownership. Relative paths are relative
// to the current directory.
func ServeSFTP(in io.Reader, out io.WriteCloser) error {
	var opts []sftp.ServerOption
	if wd, err := os.Getwd(); err == nil {
		opts = append(opts, sftp.WithServerWorkingDirectory(wd))
	}
	srv, err := sftp.NewServer(stdio{in, out}, opts...)
	if err != nil {
		return fmt.Errorf("sftp server: %w", err)
	}
	err = srv.Serve()
	out.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("sftp server: %w", err)
	}
	return nil
}

type stdio struct {
	io.Reader
	io.WriteCloser
}
