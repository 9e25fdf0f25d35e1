// Package compose loads the Docker Compose files of a devcontainer
// (dockerComposeFile, service, runServices) with the compose-spec Go library
// and turns them into a small, validated model the runner can start: the dev
// service and its sibling services in start order.
//
// Everything a compose file could use to reach outside its environment (host
// namespaces, privileges, devices, host paths) is refused with one
// user-visible message naming every offending key; keys cove accepts but does
// not act on are reported as warnings.
package compose

import (
	"fmt"
	"time"
)

// Project is a loaded, validated compose project.
type Project struct {
	// Name is the compose project name (name:, COMPOSE_PROJECT_NAME or the
	// first file's directory name).
	Name string
	// DevService is the service SSH lands in, features are applied to and
	// lifecycle commands run in.
	DevService string
	// Services are the services to run, in start order: every service
	// comes after the services it depends on.
	Services []Service
	// Volumes are the named volumes the services use, sorted. They are
	// environment-local (and part of the environment's backups).
	Volumes []string
}

// Service returns the service with the given name.
func (p *Project) Service(name string) (*Service, bool) {
	for i := range p.Services {
		if p.Services[i].Name == name {
			return &p.Services[i], true
		}
	}
	return nil, false
}

// Service is one container of the environment.
type Service struct {
	Name string
	// Image is the image reference; with Build set it names the built image
	// (may be empty).
	Image string
	Build *Build
	// Command and Entrypoint override the image's; nil keeps the image's,
	// an empty non-nil slice clears it.
	Command, Entrypoint []string
	// Environment is resolved: env_file entries, then environment, with
	// interpolation from the environment given to Load.
	Environment map[string]string
	DependsOn   map[string]Condition
	// Healthcheck is nil when the compose file has none (the image's
	// HEALTHCHECK, if any, applies); Test ["NONE"] disables it.
	Healthcheck *Healthcheck
	Volumes     []Mount
	// Ports are the container ports the service publishes, sorted. They are
	// reported like any port of the environment, never bound on the host.
	Ports      []int
	WorkingDir string
	User       string
	Hostname   string
	// ExtraHosts are "name:address" lines for /etc/hosts.
	ExtraHosts []string
	// CapAdd are the extra capabilities requested (all within the allowed
	// set); CapDrop are dropped from the default set.
	CapAdd, CapDrop []string
	// Tty and StdinOpen ask for a terminal / open stdin (docker run -t -i).
	Tty, StdinOpen bool
}

// Build describes how to build a service's image.
type Build struct {
	// Context is an absolute path inside the repository.
	Context string
	// Dockerfile is relative to Context (default "Dockerfile").
	Dockerfile string
	Args       map[string]string
	Target     string
}

// Condition is a depends_on condition.
type Condition string

// depends_on conditions.
const (
	ConditionStarted               Condition = "started"
	ConditionHealthy               Condition = "healthy"
	ConditionCompletedSuccessfully Condition = "completed_successfully"
)

// Healthcheck is a service's health check, with compose defaults filled in.
type Healthcheck struct {
	// Test is in compose form: ["CMD", arg...], ["CMD-SHELL", "cmd"] or
	// ["NONE"].
	Test                           []string
	Interval, Timeout, StartPeriod time.Duration
	Retries                        int
}

// MountType is the kind of a Mount.
type MountType string

// Mount types.
const (
	MountVolume MountType = "volume" // a named (or anonymous) environment-local volume
	MountBind   MountType = "bind"   // a directory or file of the repository
	MountTmpfs  MountType = "tmpfs"
)

// Mount is a volume of a service.
type Mount struct {
	Type MountType
	// Source is the volume name for MountVolume (empty: anonymous volume),
	// an absolute host path inside the allowed bind root (the repository by
	// default) for MountBind, and empty for MountTmpfs.
	Source   string
	Target   string
	ReadOnly bool
}

// Warning is a compose key cove accepts but ignores.
type Warning struct {
	Service string // empty for project-level keys
	Key     string
	Message string
}

func (w Warning) String() string {
	if w.Service == "" {
		return fmt.Sprintf("%s: %s", w.Key, w.Message)
	}
	return fmt.Sprintf("service %q: %s: %s", w.Service, w.Key, w.Message)
}
