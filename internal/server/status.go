package server

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// What a runner may store as an environment's status. Much of a status
// comes from inside the environment (the agent's port list, labels,
// lifecycle output in messages), so it is bounded and cleaned here.
const (
	maxReportedPorts    = 1024
	maxReportedWarnings = 100
	maxReportedExts     = 256
	maxStatusMessage    = 8 << 10  // failure and sub-status messages
	maxStatusURL        = 2048     // port URLs
	maxStatusString     = 1 << 10  // anything else
	maxCustomizations   = 64 << 10 // customizationsJson (dropped, not cut: cut JSON is not JSON)
	truncatedMarker     = " …[truncated]"
	maxReportedFeatures = 100 // installed features
	maxReportedVolumes  = 256 // volumes
	maxMapEntries       = 64  // entries of any map (a feature's options)
	maxReportedAttached = 20  // activity.attached: sessions keeping an environment alive
)

// stringLimits are the fields allowed more (or less) than maxStatusString,
// by full name; multiLine fields keep line breaks and tabs.
var (
	stringLimits = map[protoreflect.FullName]int{
		"cove.v1.EnvironmentStatus.failure_message":     maxStatusMessage,
		"cove.v1.SubStatus.message":                     maxStatusMessage,
		"cove.v1.Port.url":                              maxStatusURL,
		"cove.v1.EnvironmentStatus.customizations_json": maxCustomizations,
	}
	multiLine = map[protoreflect.FullName]bool{
		"cove.v1.EnvironmentStatus.failure_message":     true,
		"cove.v1.SubStatus.message":                     true,
		"cove.v1.EnvironmentStatus.customizations_json": true,
	}
)

// sanitizeStatus bounds a reported status in place: list lengths, string
// lengths (cut with a marker) and control characters (removed, so escape
// sequences never reach a terminal). What is dropped is said in a warning.
func sanitizeStatus(st *covev1.EnvironmentStatus) {
	var notes []string
	var ports []*covev1.Port
	for _, p := range st.GetPorts() {
		if p.GetPort() >= 1 && p.GetPort() <= 65535 {
			ports = append(ports, p)
		}
	}
	if bad := len(st.GetPorts()) - len(ports); bad > 0 {
		notes = append(notes, fmt.Sprintf("%d reported ports were not valid port numbers and are not shown", bad))
	}
	if len(ports) > maxReportedPorts {
		notes = append(notes, fmt.Sprintf("%d more ports are listening than shown (at most %d)", len(ports)-maxReportedPorts, maxReportedPorts))
		ports = ports[:maxReportedPorts]
	}
	st.Ports = ports
	if len(st.GetCustomizationsJson()) > maxCustomizations {
		notes = append(notes, fmt.Sprintf("devcontainer.json customizations are too large to show (%d bytes, at most %d)", len(st.CustomizationsJson), maxCustomizations))
		st.CustomizationsJson = ""
	}
	if n := len(st.GetExtensions()); n > maxReportedExts {
		notes = append(notes, fmt.Sprintf("%d more extensions than shown (at most %d)", n-maxReportedExts, maxReportedExts))
		st.Extensions = st.Extensions[:maxReportedExts]
	}
	if n := len(st.GetWarnings()); n > maxReportedWarnings-len(notes) {
		keep := maxReportedWarnings - len(notes) - 1
		notes = append(notes, fmt.Sprintf("%d more warnings not shown", n-keep))
		st.Warnings = st.Warnings[:keep]
	}
	if n := len(st.GetFeatures()); n > maxReportedFeatures {
		notes = append(notes, fmt.Sprintf("%d more features than shown (at most %d)", n-maxReportedFeatures, maxReportedFeatures))
		st.Features = st.Features[:maxReportedFeatures]
	}
	if n := len(st.GetVolumes()); n > maxReportedVolumes {
		notes = append(notes, fmt.Sprintf("%d more volumes than shown (at most %d)", n-maxReportedVolumes, maxReportedVolumes))
		st.Volumes = st.Volumes[:maxReportedVolumes]
	}
	if a := st.GetActivity(); len(a.GetAttached()) > maxReportedAttached {
		a.Attached = append(a.Attached[:maxReportedAttached-1], fmt.Sprintf("%d more sessions", len(a.Attached)-maxReportedAttached+1))
	}
	st.Warnings = append(st.Warnings, notes...)
	cleanStrings(st.ProtoReflect())
}

// cleanStrings applies the string bounds to every string in m, recursively.
func cleanStrings(m protoreflect.Message) {
	type set struct {
		fd protoreflect.FieldDescriptor
		v  string
	}
	var sets []set
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapKey().Kind() == protoreflect.StringKind && fd.MapValue().Kind() == protoreflect.StringKind {
				cleanStringMap(fd, v.Map())
			}
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				switch fd.Kind() {
				case protoreflect.StringKind:
					l.Set(i, protoreflect.ValueOfString(cleanString(fd, l.Get(i).String())))
				case protoreflect.MessageKind:
					cleanStrings(l.Get(i).Message())
				}
			}
		case fd.Kind() == protoreflect.StringKind:
			if s := cleanString(fd, v.String()); s != v.String() {
				sets = append(sets, set{fd, s})
			}
		case fd.Kind() == protoreflect.MessageKind:
			cleanStrings(v.Message())
		}
		return true
	})
	for _, s := range sets {
		m.Set(s.fd, protoreflect.ValueOfString(s.v))
	}
}

// cleanStringMap applies the string bounds to a map<string, string>'s keys
// and values and keeps at most maxMapEntries of them (the first by key).
func cleanStringMap(fd protoreflect.FieldDescriptor, m protoreflect.Map) {
	type entry struct{ k, v string }
	var all []entry
	m.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		all = append(all, entry{k.String(), v.String()})
		return true
	})
	slices.SortFunc(all, func(a, b entry) int { return strings.Compare(a.k, b.k) })
	for _, e := range all {
		m.Clear(protoreflect.ValueOfString(e.k).MapKey())
	}
	for i, e := range all {
		if i == maxMapEntries {
			break
		}
		k := cleanString(fd.MapKey(), e.k)
		m.Set(protoreflect.ValueOfString(k).MapKey(), protoreflect.ValueOfString(cleanString(fd.MapValue(), e.v)))
	}
}

func cleanString(fd protoreflect.FieldDescriptor, s string) string {
	keepBreaks := multiLine[fd.FullName()]
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) && !(keepBreaks && (r == '\n' || r == '\t')) }) >= 0 {
		s = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) && !(keepBreaks && (r == '\n' || r == '\t')) {
				return -1
			}
			return r
		}, s)
	}
	limit := maxStatusString
	if l, ok := stringLimits[fd.FullName()]; ok {
		limit = l
	}
	if len(s) <= limit {
		return s
	}
	cut := limit - len(truncatedMarker)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncatedMarker
}
