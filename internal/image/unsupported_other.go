//go:build !linux

package image

import (
	"context"
	"errors"
	"io"

	"github.com/covedev/cove/internal/idmap"
)

var (
	errUnsupported = errors.New("image store and root file systems need Linux")
	errEscape      = errors.New("path escapes the layer root")
)

func unpack(context.Context, string, io.Reader) error { return errUnsupported }

func syncDir(string) error { return errUnsupported }

func shiftedLayer(context.Context, string, idmap.Range, string) (string, error) {
	return "", errUnsupported
}

// MountRootfs is not supported outside Linux.
func MountRootfs(context.Context, RootfsConfig) error { return errUnsupported }

// UnmountRootfs is not supported outside Linux.
func UnmountRootfs(context.Context, RootfsConfig) error { return errUnsupported }

// IDMappedMountsSupported is false outside Linux.
func IDMappedMountsSupported(string) bool { return false }
