package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path"
	"regexp"
	"strings"
	"unicode"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/google/go-containerregistry/pkg/name"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Bounds of what a user may put in an environment's spec.
const (
	maxSpecString   = 4096            // bytes of any one string
	maxRefLen       = 255             // bytes of a git ref
	maxTimeoutSecs  = 366 * 24 * 3600 // a timeout longer than a year is a mistake
	maxSharedPorts  = 1024            // entries in spec.ports
	maxImageRefLen  = 512             // bytes of defaultImage
	maxLocalEnv     = 64              // variables in spec.localEnv
	fieldPrefixSpec = "spec"          // field paths in messages start here
	controlCharText = "a control character"
)

// classIDRE is what a class id looks like: it names something on runners,
// never a path.
var classIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// invalidField is the error for a bad field: it names the field (JSON name,
// as users write it) so the user knows what to fix.
func invalidField(field, format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// validateSpec checks a spec a user sent before anything is stored. The
// caller has set defaults (class, desired phase) already.
func (s *Server) validateSpec(ctx context.Context, u store.User, spec *covev1.EnvironmentSpec) error {
	src := spec.GetContent()
	if src.GetGitUrl() == "" {
		return invalidField("spec.content.gitUrl", "required (a git URL or a local path)")
	}
	// The source first: a member naming a local path gets one answer,
	// whatever characters it holds.
	if err := checkSource(u, src.GetGitUrl()); err != nil {
		return err
	}
	if err := checkStrings(fieldPrefixSpec, spec.ProtoReflect()); err != nil {
		return err
	}
	if ref := src.GetRef(); len(ref) > maxRefLen || strings.HasPrefix(ref, "-") || strings.ContainsAny(ref, " \\") {
		return invalidField("spec.content.ref", "invalid git ref %q", ref)
	}
	if p := spec.GetDevcontainerPath(); p != "" {
		if path.IsAbs(p) || strings.Contains(p, "\\") || hasDotDot(p) {
			return invalidField("spec.devcontainerPath", "%q must be a path inside the repository: relative, without '..'", p)
		}
	}
	t := spec.GetTimeouts()
	for _, f := range []struct {
		name string
		v    int64
	}{{"spec.timeouts.inactivitySeconds", t.GetInactivitySeconds()}, {"spec.timeouts.maxLifetimeSeconds", t.GetMaxLifetimeSeconds()}} {
		if f.v < 0 || f.v > maxTimeoutSecs {
			return invalidField(f.name, "%d is out of range: use 0 (never) up to %d seconds", f.v, maxTimeoutSecs)
		}
	}
	if n := len(spec.GetLeases()); n != 0 {
		return invalidField("spec.leases", "are taken with `cove env keepalive` once the environment exists; leave them empty, not %d", n)
	}
	if r := spec.GetStopReason(); r != "" {
		return invalidField("spec.stopReason", "is set by the server when it stops an environment; leave it empty")
	}
	if err := checkCreateBackupFields(spec); err != nil { // backups_user.go
		return err
	}
	if g := spec.GetRebuildGeneration(); g != 0 {
		return invalidField("spec.rebuildGeneration", "is set by the server (`cove env rebuild`); leave it 0, not %d", g)
	}
	if err := checkPorts(spec.GetPorts()); err != nil {
		return err
	}
	if err := s.checkImage(u, spec.GetDefaultImage()); err != nil {
		return err
	}
	return s.checkClass(ctx, spec.GetClassId())
}

// checkStrings walks every string set in m (recursively) and refuses control
// characters (NUL, escape sequences, line breaks) and oversized values.
func checkStrings(field string, m protoreflect.Message) error {
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := field + "." + fd.JSONName()
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = checkValue(fmt.Sprintf("%s[%d]", name, i), fd, l.Get(i))
			}
		case fd.IsMap() && name == fieldPrefixSpec+".localEnv":
			err = checkLocalEnv(name, v.Map())
		case fd.IsMap():
			err = invalidField(name, "maps are not accepted here")
		default:
			err = checkValue(name, fd, v)
		}
		return err == nil
	})
	return err
}

func checkValue(name string, fd protoreflect.FieldDescriptor, v protoreflect.Value) error {
	switch fd.Kind() {
	case protoreflect.StringKind:
		str := v.String()
		if len(str) > maxSpecString {
			return invalidField(name, "too long (%d bytes, at most %d)", len(str), maxSpecString)
		}
		if strings.IndexFunc(str, unicode.IsControl) >= 0 {
			return invalidField(name, "contains %s", controlCharText)
		}
	case protoreflect.MessageKind:
		return checkStrings(name, v.Message())
	}
	return nil
}

// envNameRE is what a ${localEnv:VAR} variable name looks like.
var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// checkLocalEnv bounds the ${localEnv:…} values a CLI sent: names that are
// variable names, values like any other spec string.
func checkLocalEnv(field string, m protoreflect.Map) error {
	if m.Len() > maxLocalEnv {
		return invalidField(field, "%d variables, at most %d", m.Len(), maxLocalEnv)
	}
	var err error
	m.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		name := k.String()
		if !envNameRE.MatchString(name) {
			err = invalidField(field, "%q is not a variable name", name)
			return false
		}
		str := v.String()
		if len(str) > maxSpecString {
			err = invalidField(field+"."+name, "too long (%d bytes, at most %d)", len(str), maxSpecString)
		} else if strings.IndexFunc(str, func(r rune) bool { return r != '\t' && unicode.IsControl(r) }) >= 0 {
			err = invalidField(field+"."+name, "contains %s (only single-line values can be sent)", controlCharText)
		}
		return err == nil
	})
	return err
}

func hasDotDot(p string) bool {
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return true
		}
	}
	return false
}

// checkPorts validates the port sharing entries of a spec.
func checkPorts(ports []*covev1.PortSpec) error {
	if len(ports) > maxSharedPorts {
		return invalidField("spec.ports", "%d entries, at most %d", len(ports), maxSharedPorts)
	}
	seen := map[int32]bool{}
	for i, p := range ports {
		field := fmt.Sprintf("spec.ports[%d]", i)
		if p.GetPort() < 1 || p.GetPort() > 65535 {
			return invalidField(field+".port", "invalid port %d: must be 1-65535", p.GetPort())
		}
		if seen[p.GetPort()] {
			return invalidField(field+".port", "port %d is listed twice", p.GetPort())
		}
		seen[p.GetPort()] = true
		if !knownVisibility(p.GetVisibility()) {
			return invalidField(field+".visibility", "unknown visibility %d: use PRIVATE, ORGANIZATION or PUBLIC", int32(p.GetVisibility()))
		}
	}
	return nil
}

func knownVisibility(v covev1.PortVisibility) bool {
	switch v {
	case covev1.PortVisibility_PORT_VISIBILITY_UNSPECIFIED, visPrivate, visOrg, visPublic:
		return true
	}
	return false
}

// checkImage validates defaultImage: an image reference, not on a loopback,
// private or link-local registry (what the runner's host can reach but
// users should not) unless the caller is an owner or the server allows it.
func (s *Server) checkImage(u store.User, img string) error {
	if img == "" {
		return nil
	}
	const field = "spec.defaultImage"
	if len(img) > maxImageRefLen {
		return invalidField(field, "too long (%d bytes, at most %d)", len(img), maxImageRefLen)
	}
	ref, err := name.ParseReference(img)
	if err != nil {
		return invalidField(field, "%q is not an image reference (like debian:bookworm or ghcr.io/org/image:tag): %v", img, err)
	}
	reg := ref.Context().RegistryStr()
	if privateRegistry(reg) && u.Role != store.RoleOwner && !s.cfg.AllowPrivateImages {
		return connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("%s: registry %q is a loopback or private address; only organization owners may use one (or the server's --allow-private-images)", field, reg))
	}
	return nil
}

// privateRegistry reports whether a registry host[:port] names this host or
// a non-public network: localhost, loopback, private, link-local, CGNAT,
// unspecified or multicast addresses. Host names are not resolved here: the
// runner's own egress rules decide where names lead.
func privateRegistry(reg string) bool {
	host := reg
	if h, _, err := net.SplitHostPort(reg); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	cgnat := netip.MustParsePrefix("100.64.0.0/10")
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || cgnat.Contains(ip)
}

// checkClass requires the class to be one some runner offers (or the
// server's default class, which may come later with the first runner).
func (s *Server) checkClass(ctx context.Context, class string) error {
	const field = "spec.classId"
	if !classIDRE.MatchString(class) {
		return invalidField(field, "invalid class %q: lower-case letters, digits, '.', '_' and '-' (at most 63)", class)
	}
	if class == s.cfg.DefaultClass {
		return nil
	}
	runners, err := s.store.ListRunners(ctx)
	if err != nil {
		return err
	}
	var known []string
	seen := map[string]bool{}
	for _, r := range runners {
		for _, c := range r.Capabilities.GetClasses() {
			if c.GetId() == class {
				return nil
			}
			if !seen[c.GetId()] {
				seen[c.GetId()] = true
				known = append(known, c.GetId())
			}
		}
	}
	onOffer := "none"
	if len(known) > 0 {
		onOffer = strings.Join(known, ", ")
	}
	return invalidField(field, "no active runner offers class %q (classes on offer: %s)", class, onOffer)
}
