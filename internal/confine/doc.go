// Package confine is the one way host code that runs as root opens, reads,
// copies, unpacks or mounts anything an environment, a repository, an
// image or a feature controls.
//
// The rule it enforces: a path an environment can write is never resolved
// by name as root. Everything starts from a directory the caller trusts (a
// runner-owned directory such as an environment's host directory, opened
// with OpenDir) and goes on through file descriptors, with the kernel doing
// the resolution (openat2):
//
//   - Beneath resolves a relative path below a directory and refuses every
//     symlink and mount crossing on the way: for paths cove itself laid out
//     (the repository directory under the workspace, a volume, the overlay
//     upper directory).
//   - InRoot resolves as if the directory were "/": symlinks are followed
//     but can never lead out (an absolute link or ".." stops at the
//     directory). For content the environment legitimately links within
//     (an image's /etc/passwd, a bind source inside the repository).
//
// What is opened stays what was checked: Walk and CopyTree read a hostile
// tree entry by entry through the descriptor of its parent, never by path,
// so swapping a directory for a symlink halfway changes nothing; Stage
// mounts a directory from its descriptor at a root-owned staging path that
// the OCI runtime then bind-mounts, so the runtime never resolves a path the
// environment controls; Unpack writes a tar stream below a directory
// without ever writing through a link. EvalSymlinks-then-use is the bug
// this package exists to prevent.
package confine
