package features

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"

	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/usererr"
	"github.com/tailscale/hujson"
	"golang.org/x/sys/unix"
)

// Metadata is a parsed devcontainer-feature.json.
type Metadata struct {
	ID            string                     `json:"id"`
	Version       string                     `json:"version"`
	Name          string                     `json:"name"`
	Description   string                     `json:"description,omitempty"`
	Options       map[string]Option          `json:"options,omitempty"`
	ContainerEnv  map[string]string          `json:"containerEnv,omitempty"`
	Mounts        []Mount                    `json:"mounts,omitempty"`
	CapAdd        []string                   `json:"capAdd,omitempty"`
	SecurityOpt   []string                   `json:"securityOpt,omitempty"`
	Privileged    bool                       `json:"privileged,omitempty"`
	Init          bool                       `json:"init,omitempty"`
	Entrypoint    string                     `json:"entrypoint,omitempty"`
	InstallsAfter []string                   `json:"installsAfter,omitempty"`
	DependsOn     map[string]json.RawMessage `json:"dependsOn,omitempty"`
	LegacyIDs     []string                   `json:"legacyIds,omitempty"`

	Customizations map[string]json.RawMessage `json:"customizations,omitempty"`

	// Lifecycle commands, kept as written (a string, an array of strings or
	// an object of named commands); the lifecycle package interprets them.
	OnCreateCommand      json.RawMessage `json:"onCreateCommand,omitempty"`
	UpdateContentCommand json.RawMessage `json:"updateContentCommand,omitempty"`
	PostCreateCommand    json.RawMessage `json:"postCreateCommand,omitempty"`
	PostStartCommand     json.RawMessage `json:"postStartCommand,omitempty"`
	PostAttachCommand    json.RawMessage `json:"postAttachCommand,omitempty"`
}

// Option is one entry of a feature's "options".
type Option struct {
	Type        string   `json:"type"` // "string" or "boolean"
	Default     any      `json:"default,omitempty"`
	Enum        []string `json:"enum,omitempty"`
	Proposals   []string `json:"proposals,omitempty"`
	Description string   `json:"description,omitempty"`
}

// Mount is a mount a feature asks for, written either as an object or as a
// Docker --mount string ("type=volume,source=x,target=/y,readonly"): the
// devcontainer's own (one parser; a bad string is reported, with the other
// mounts, when the merged configuration is checked).
type Mount = devcontainer.Mount

// maxMetadataSize bounds devcontainer-feature.json.
const maxMetadataSize = 1 << 20

// readMetadata parses dir/devcontainer-feature.json; what a feature author
// got wrong is a user error naming the feature. The feature's own files may
// be symlinks to anything: its metadata and install.sh must be regular
// files of the feature itself (read through confine, never followed).
func readMetadata(dir, ref string) (Metadata, error) {
	d, err := confine.OpenDir(dir)
	if err != nil {
		return Metadata{}, fmt.Errorf("read feature metadata: %w", err)
	}
	defer d.Close()
	b, err := d.ReadFile("devcontainer-feature.json", maxMetadataSize, confine.Beneath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Metadata{}, usererr.New("feature %q has no devcontainer-feature.json at its root", ref)
		}
		return Metadata{}, usererr.Wrap(err, "feature %q: devcontainer-feature.json must be a regular file of at most %d bytes", ref, maxMetadataSize)
	}
	var m Metadata
	std, err := hujson.Standardize(b)
	if err == nil {
		err = json.Unmarshal(std, &m)
	}
	if err != nil {
		return Metadata{}, usererr.Wrap(err, "feature %q: invalid devcontainer-feature.json: %v", ref, err)
	}
	if m.ID == "" {
		return Metadata{}, usererr.New("feature %q: devcontainer-feature.json has no id", ref)
	}
	for id, o := range m.Options {
		switch o.Type {
		case "string", "boolean":
		default:
			return Metadata{}, usererr.New("feature %q: option %q has unsupported type %q", ref, id, o.Type)
		}
	}
	if st, err := d.Stat("install.sh", confine.Beneath); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Metadata{}, usererr.New("feature %q has no install.sh (a regular file at its root)", ref)
	}
	return m, nil
}
