package blob

import (
	"fmt"
	"strings"

	"github.com/covedev/cove/internal/errdefs"
)

// MaxKeyLen bounds a key's length in bytes. S3 allows 1024 bytes in all,
// and s3blob puts its configured prefix in front of the key, so keys stay
// well below that.
const MaxKeyLen = 512

// maxSegmentLen bounds one "/"-separated segment: a local file name may
// not exceed 255 bytes.
const maxSegmentLen = 200

// ValidateKey checks that key is a key every Store accepts and that maps to
// a path inside a local directory: segments separated by single "/", each
// of 1 to 200 characters of [A-Za-z0-9._-] starting with a letter or digit
// (so no "", ".", "..", hidden names or leading "/"), at most MaxKeyLen
// bytes in all. The error (InvalidArgument) says what is wrong.
func ValidateKey(key string) error {
	if key == "" {
		return errdefs.InvalidArgument(fmt.Errorf("invalid blob key: empty"))
	}
	if len(key) > MaxKeyLen {
		return errdefs.InvalidArgument(fmt.Errorf("invalid blob key %.40q…: %d bytes, more than %d", key, len(key), MaxKeyLen))
	}
	for seg := range strings.SplitSeq(key, "/") {
		if err := validSegment(seg); err != nil {
			return errdefs.InvalidArgument(fmt.Errorf("invalid blob key %q: %v", key, err))
		}
	}
	return nil
}

// ValidatePrefix checks a List prefix: "" (everything), or the beginning
// of a valid key, which may end with "/" or in the middle of a segment.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if len(prefix) > MaxKeyLen {
		return errdefs.InvalidArgument(fmt.Errorf("invalid blob prefix %.40q…: %d bytes, more than %d", prefix, len(prefix), MaxKeyLen))
	}
	segs := strings.Split(prefix, "/")
	for i, seg := range segs {
		if seg == "" && i > 0 && i == len(segs)-1 {
			break // ends with "/"
		}
		if err := validSegment(seg); err != nil {
			return errdefs.InvalidArgument(fmt.Errorf("invalid blob prefix %q: %v", prefix, err))
		}
	}
	return nil
}

// validSegment checks one segment (or the beginning of one, at the end of
// a prefix).
func validSegment(seg string) error {
	switch {
	case seg == "":
		return fmt.Errorf("empty segment (leading, trailing or double \"/\")")
	case len(seg) > maxSegmentLen:
		return fmt.Errorf("segment of %d bytes, more than %d", len(seg), maxSegmentLen)
	case !alnum(seg[0]):
		return fmt.Errorf("segment %q does not start with a letter or digit", seg)
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if !alnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("character %q not allowed (letters, digits, '.', '_', '-' and '/' are)", c)
		}
	}
	return nil
}

func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
