// Package treecopy copies a directory tree faithfully: regular files, dirs,
// symlinks, hard links, devices (including overlay whiteouts), fifos,
// sockets, extended attributes, modes (set-id bits included) and times,
// optionally mapping every uid and gid on the way. It is the common core of
// the image store's chowned layer copies and of feature layer snapshots;
// committing the copy (sync and rename into place) is left to callers.
package treecopy
