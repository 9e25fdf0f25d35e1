// Package image pulls OCI images and turns them into root filesystems for
// environments.
//
// # Layer store
//
// A Store keeps, under its root directory:
//
//	blobs/sha256/<hex>          manifests and image configs (JSON), by digest
//	layers/sha256/<diffid-hex>/ each layer unpacked once, shared by all images
//	shifted/<host>-<size>/<hex> chowned copies of layers (fallback, see below)
//	tmp/                        work in progress, discarded on NewStore
//	index.json                  image reference -> manifest digest
//
// A layer directory is complete if and only if it exists: it is unpacked into
// a fresh directory under tmp/, synced, then renamed into place. A runner killed
// mid-unpack leaves only debris in tmp/, which the next NewStore removes, and
// the layer is unpacked again on the next Pull. Import stores images that
// come from elsewhere (a local build) the same way, under a local name, and
// shares their layers with pulled images by diff id. Layers keep the ownership
// recorded in the image (uid 0 on disk is uid 0 in the tar); they are never
// shifted in place, so one copy serves environments with different id ranges.
//
// # Root filesystems
//
// MountRootfs gives each environment its own view of the shared layers:
// every layer directory is attached, through an idmapped mount
// (open_tree + mount_setattr(MOUNT_ATTR_IDMAP) + move_mount), at a short path
// under the environment's LowerDir, so that files owned by id N on disk appear
// owned by IDMap.HostID+N. Those mounts are the lower directories of an
// overlay mounted at the environment's Target, with an upper and work
// directory on the environment's disk that belong to the environment's root.
//
// When the kernel or the file system holding the layers does not support
// idmapped mounts (IDMappedMountsSupported reports false), MountRootfs falls
// back to chowned copies: each layer is copied once per id range, with every
// uid and gid shifted by IDMap.HostID, into the store's shifted/ directory
// (committed by rename, like layers), and those copies are the overlay's lower
// directories. This costs disk space and time per id range but needs no kernel
// feature beyond overlayfs.
package image
