package runner

import (
	"time"

	"github.com/tailscale/hujson"
)

// maxClassTimeout is the longest timeout cap a class may set (the server
// refuses longer ones).
const maxClassTimeout = 366 * 24 * time.Hour

// duration parses a class's timeout cap (maxInactivity, maxLifetime) into
// whole seconds: a duration string such as "30m" or "12h", or 0 for none.
// An environment asking for more than the cap, or for never, gets the cap
// (docs/autostop.md).
func (p classParser) duration(v hujson.Value, key string, out *int64) error {
	want := `want a duration such as "30m" or "12h" (at least 1s, at most 366 days), or 0 for none`
	lit, ok := p.literal(v)
	if !ok {
		return p.errAt(v, "%s: %s", key, want)
	}
	switch lit.Kind() {
	case '0':
		if n, ok := wholeNumber(lit); ok && n == 0 {
			*out = 0
			return nil
		}
	case '"':
		d, err := time.ParseDuration(lit.String())
		if err == nil && d >= time.Second && d <= maxClassTimeout {
			*out = int64(d / time.Second)
			return nil
		}
		return p.errAt(v, "%s: %q: %s", key, lit.String(), want)
	}
	return p.errAt(v, "%s: %s", key, want)
}
