//go:build !linux

package features

import "errors"

// SnapshotLayer is only supported on Linux.
func SnapshotLayer(upperDir, layerDir string, shift uint32, exclude []string) error {
	return errors.New("snapshot layers: only supported on Linux")
}
