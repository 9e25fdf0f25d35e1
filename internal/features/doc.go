// Package features resolves, orders and installs Dev Container Features
// (https://containers.dev/implementors/features/) for the runner.
//
// A feature is referenced in devcontainer.json as an OCI artifact
// ("ghcr.io/devcontainers/features/node:1", "host/ns/name@sha256:..."), a
// tarball URL ("https://example.com/devcontainer-feature-go.tgz") or a local
// directory relative to the folder holding devcontainer.json ("./myfeature").
//
// Resolver.Resolve fetches every referenced feature (and, recursively, the
// features they declare in dependsOn) into a content-addressed cache:
//
//	<CacheDir>/sha256/<hex>/   one unpacked feature directory per digest
//	<CacheDir>/tmp/            work in progress, committed by rename
//
// The digest is the OCI manifest digest for registry features and the sha256
// of the tarball or of the directory's contents otherwise. It then orders the
// features as the specification's round-based algorithm does: dependsOn is a
// hard dependency, installsAfter a soft one (only among features present),
// and overrideFeatureInstallOrder raises the priority of the features it
// names.
//
// InstallScript renders the POSIX sh script the runner runs, as root, inside
// the container to install the features in that order (after Stage copies
// their directories in), and SnapshotLayer turns the container's overlay upper
// directory into a reusable layer, cached under CacheKey, so that a second
// environment with the same image and features does not run install.sh again.
package features
