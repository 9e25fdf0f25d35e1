// Package envconfig resolves what an environment runs, without touching
// the host: it turns the devcontainer.json (merged with image and feature
// metadata), the image config, the resolved features and the Docker
// Compose project, with the environment's class and identity, into the
// resolved configuration the runner persists (Resolved) and, from that,
// into the machines to start (Machines): for the dev container and each
// sibling service its process (the agent's command line), user, env,
// working directory, mounts, ports, lifecycle hooks, health check,
// dependencies and hostname.
//
// Mounts are descriptions (a kind, a target, options), never host paths:
// the runner maps each kind to the host directory it owns. The paths the
// containers see are internal/guest's.
//
// The package is pure: no file, process, network or runtime access, and
// no host package (internal/runtime, netenv, image, content, confine,
// build, runner, server, store). Pulling images, fetching features and
// reading the repository happen before; staging and starting after.
package envconfig

import (
	"slices"
	"time"

	"github.com/covedev/cove/internal/devcontainer"
)

// Identity names the environment resolution is for.
type Identity struct {
	ID   string
	Name string
	// RepoName is the checkout's directory name under /workspaces.
	RepoName string
	// OrganizationID, ProjectID and GitURL scope the features cache: who
	// may share an installed-features layer (FeatureScope).
	OrganizationID, ProjectID, GitURL string
}

// Class is the environment's class: its size and what it allows.
type Class struct {
	ID          string
	CPUs        int
	MemoryBytes int64
	DiskBytes   int64
	Pids        int64
	// Allow is what the class permits of settings that weaken isolation.
	Allow devcontainer.Allow
}

// Capabilities are the capabilities a container has anyway, which capAdd
// and cap_add may name (Docker's default set).
var Capabilities = []string{"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW",
	"SETGID", "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}

// Allow is what a runner permits of privileged devcontainer settings: no
// privileged mode, only the capabilities a container has anyway;
// Dockerfile builds when it has a builder (build), Docker Compose when it
// has environment networking (compose).
func Allow(build, compose bool) devcontainer.Allow {
	return devcontainer.Allow{Build: build, Compose: compose, Capabilities: slices.Clone(Capabilities)}
}

// Image is an image as the image store returns it (image.Image): Ref is
// what the environment's state records as its image ("built from ..." for
// a build), Layers are opaque to this package.
type Image struct {
	Ref    string
	Digest string
	Layers []string
	Config ImageConfig
}

// ImageConfig is the part of an image config an environment needs
// (image.Config).
type ImageConfig struct {
	User       string
	Env        []string
	Entrypoint []string
	Cmd        []string
	WorkingDir string
	Labels     map[string]string
	// Healthcheck is the image's HEALTHCHECK (nil if it has none).
	Healthcheck *ImageHealthcheck
}

// ImageHealthcheck is an image's HEALTHCHECK as its config has it: zero
// durations and retries mean Docker's defaults.
type ImageHealthcheck struct {
	Test                           []string
	Interval, Timeout, StartPeriod time.Duration
	Retries                        int
}

// Feature is a resolved devcontainer feature, as plain data: its id as
// written in devcontainer.json and its devcontainer-feature.json metadata
// (features.Feature's Ref.ID and json.Marshal of its Meta).
type Feature struct {
	ID       string
	Metadata []byte
	// RequiredBy are the ids of the features that depend on this one (in
	// their dependsOn), for messages; empty for a feature of
	// devcontainer.json's own.
	RequiredBy []string
}
