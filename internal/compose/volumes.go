package compose

import (
	"path"
	"regexp"

	"github.com/compose-spec/compose-go/v2/types"
)

// driveLetterRE is a short-syntax volume compose-go reads as a Windows
// drive path ("d:/var/lib/db" → anonymous volume at "d:/var/lib/db"): a
// one-letter source, then the target.
var driveLetterRE = regexp.MustCompile(`^([A-Za-z]):(/[^:]*)$`)

// normalizeVolumes reads the short-syntax volumes of every service as
// docker compose does on Linux, where there are no drive letters: compose-go
// parses "d:/data" (a one-letter named volume) as an anonymous volume whose
// target is the whole string, which would mount a volume at a relative
// path. Such an entry becomes the named volume d at /data. (With a mode,
// "d:/data:ro", compose-go reads a bind of "d:/data"; the validator then
// refuses it as a missing bind source.)
func normalizeVolumes(cp *types.Project) {
	for name, s := range cp.Services {
		changed := false
		for i, v := range s.Volumes {
			if v.Type != types.VolumeTypeVolume || v.Source != "" || path.IsAbs(v.Target) {
				continue
			}
			m := driveLetterRE.FindStringSubmatch(v.Target)
			if m == nil {
				continue
			}
			s.Volumes[i] = types.ServiceVolumeConfig{Type: types.VolumeTypeVolume, Source: m[1], Target: m[2]}
			changed = true
		}
		if changed {
			cp.Services[name] = s
		}
	}
}
