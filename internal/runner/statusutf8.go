package runner

import (
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// validUTF8 makes every string of a status about to be reported valid
// UTF-8, in place. Proto strings must be: one invalid byte (a lifecycle
// command's output, an option value cut mid-character) would make every
// report of the environment fail to encode, and the runner retry the same
// report for ever.
func validUTF8(m protoreflect.Message) {
	fix := func(s string) string {
		if utf8.ValidString(s) {
			return s
		}
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	type set struct {
		fd protoreflect.FieldDescriptor
		v  protoreflect.Value
	}
	var sets []set
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapKey().Kind() != protoreflect.StringKind {
				break
			}
			mp := v.Map()
			type kv struct {
				k string
				v protoreflect.Value
			}
			var bad []kv
			mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				switch {
				case !utf8.ValidString(k.String()):
					bad = append(bad, kv{k.String(), v})
				case fd.MapValue().Kind() == protoreflect.StringKind && !utf8.ValidString(v.String()):
					mp.Set(k, protoreflect.ValueOfString(fix(v.String())))
				case fd.MapValue().Kind() == protoreflect.MessageKind:
					validUTF8(v.Message())
				}
				return true
			})
			for _, e := range bad {
				mp.Clear(protoreflect.ValueOfString(e.k).MapKey())
				if fd.MapValue().Kind() == protoreflect.StringKind {
					e.v = protoreflect.ValueOfString(fix(e.v.String()))
				}
				mp.Set(protoreflect.ValueOfString(fix(e.k)).MapKey(), e.v)
			}
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				switch fd.Kind() {
				case protoreflect.StringKind:
					l.Set(i, protoreflect.ValueOfString(fix(l.Get(i).String())))
				case protoreflect.MessageKind:
					validUTF8(l.Get(i).Message())
				}
			}
		case fd.Kind() == protoreflect.StringKind:
			if s := v.String(); !utf8.ValidString(s) {
				sets = append(sets, set{fd, protoreflect.ValueOfString(fix(s))})
			}
		case fd.Kind() == protoreflect.MessageKind:
			validUTF8(v.Message())
		}
		return true
	})
	for _, s := range sets {
		m.Set(s.fd, s.v)
	}
}
