package container

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/runtime"
)

const (
	cpuPeriod   = resources.CPUPeriod // µs
	nofileLimit = 1 << 20
	defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// defaultCaps is Docker's default capability set: enough for package
// managers and sudo inside, nothing that reaches the host.
var defaultCaps = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FSETID",
	"CAP_FOWNER",
	"CAP_MKNOD",
	"CAP_NET_RAW",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETFCAP",
	"CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT",
	"CAP_KILL",
	"CAP_AUDIT_WRITE",
}

// maskedPaths hide host information from /proc and /sys, as containerd and
// Docker do.
var maskedPaths = []string{
	"/proc/acpi",
	"/proc/asound",
	"/proc/interrupts",
	"/proc/kcore",
	"/proc/keys",
	"/proc/latency_stats",
	"/proc/sched_debug",
	"/proc/scsi",
	"/proc/timer_list",
	"/proc/timer_stats",
	"/sys/devices/virtual/powercap",
	"/sys/firmware",
}

var readonlyPaths = []string{
	"/proc/bus",
	"/proc/fs",
	"/proc/irq",
	"/proc/sys",
	"/proc/sysrq-trigger",
}

// defaultDevices are the character devices every environment may use (the
// nodes themselves are created by runc; /dev/ptmx comes from devpts).
var defaultDevices = []struct{ major, minor int64 }{
	{1, 3}, // null
	{1, 5}, // zero
	{1, 7}, // full
	{1, 8}, // random
	{1, 9}, // urandom
	{5, 0}, // tty
	{5, 1}, // console
	{5, 2}, // ptmx
}

// ociSpec builds the OCI runtime spec for an environment.
func (r *Runtime) ociSpec(s runtime.Spec) (*specs.Spec, error) {
	env := s.Process.Env
	if len(env) == 0 {
		env = []string{defaultPath}
	}
	cwd := s.Process.Cwd
	if cwd == "" {
		cwd = "/"
	}
	hostname := s.Hostname
	if hostname == "" {
		hostname = s.ID
	}
	caps := append([]string(nil), defaultCaps...)
	idm := []specs.LinuxIDMapping{{ContainerID: 0, HostID: s.IDMap.HostID, Size: s.IDMap.Size}}

	devMounts, devRules, err := hostDevices(s.Devices, filepath.Join(s.StateDir, devicesDir), s.IDMap.HostID)
	if err != nil {
		return nil, err
	}
	res := s.Resources
	var annotations map[string]string
	if s.Group != "" {
		// The group's cgroup carries the limits.
		res = runtime.Resources{}
		annotations = map[string]string{groupAnnotation: s.Group}
	}
	spec := &specs.Spec{
		Version:     specs.Version,
		Annotations: annotations,
		Root:        &specs.Root{Path: s.Rootfs},
		Process: &specs.Process{
			Args: s.Process.Args,
			Env:  env,
			Cwd:  cwd,
			User: specs.User{UID: s.Process.UID, GID: s.Process.GID},
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  caps,
				Effective: caps,
				Permitted: caps,
			},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: r.nofile, Soft: r.nofile}},
			// sudo and setuid binaries must work inside.
			NoNewPrivileges: false,
		},
		Hostname: hostname,
		Mounts:   slices.Concat(defaultMounts(s.NetNSPath != ""), devMounts, ociMounts(s.Mounts)),
		Linux: &specs.Linux{
			UIDMappings: idm,
			GIDMappings: idm,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.UserNamespace},
				{Type: specs.PIDNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.CgroupNamespace},
				{Type: specs.NetworkNamespace, Path: s.NetNSPath},
			},
			Resources:     ociResources(res, devRules),
			CgroupsPath:   r.cgroupPath(s.ID, s.Group),
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
			Seccomp:       seccompProfile(caps),
		},
	}
	return spec, nil
}

// defaultMounts are the standard container mounts. sharedNetNS: the
// environment joins a network namespace the runner made (owned by the host's
// user namespace), where a fresh sysfs cannot be mounted; it gets a
// read-only bind of /sys instead, as rootless Docker does. The bind is
// recursively read-only ("rro", mount_setattr with AT_RECURSIVE): the host's
// mounts below /sys (cgroup hierarchies, and on other hosts debugfs,
// tracefs, securityfs, bpffs, configfs) come along, and a plain "ro" would
// leave them writable.
func defaultMounts(sharedNetNS bool) []specs.Mount {
	sys := specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}}
	if sharedNetNS {
		sys = specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro", "rro"}}
	}
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		sys,
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	}
}

func ociMounts(ms []runtime.Mount) []specs.Mount {
	out := make([]specs.Mount, 0, len(ms))
	for _, m := range ms {
		typ := m.Type
		if typ == "" {
			typ = "bind"
		}
		out = append(out, specs.Mount{
			Destination: m.Destination,
			Type:        typ,
			Source:      m.Source,
			Options:     append([]string(nil), m.Options...),
		})
	}
	return out
}

func ociResources(res runtime.Resources, devRules []specs.LinuxDeviceCgroup) *specs.LinuxResources {
	out := &specs.LinuxResources{}
	// Deny every device, then allow the defaults and the granted ones.
	out.Devices = append(out.Devices, specs.LinuxDeviceCgroup{Allow: false, Access: "rwm"})
	// Like Docker: mknod of any node is allowed (using it is not).
	out.Devices = append(out.Devices,
		specs.LinuxDeviceCgroup{Allow: true, Type: "c", Access: "m"},
		specs.LinuxDeviceCgroup{Allow: true, Type: "b", Access: "m"},
	)
	for _, d := range defaultDevices {
		out.Devices = append(out.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: ptr(d.major), Minor: ptr(d.minor), Access: "rwm"})
	}
	// devpts pseudo terminals (/dev/pts/N).
	out.Devices = append(out.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: ptr(int64(136)), Access: "rwm"})
	out.Devices = append(out.Devices, devRules...)

	if res.CPUMillis > 0 {
		out.CPU = &specs.LinuxCPU{
			Period: ptr(uint64(cpuPeriod)),
			Quota:  ptr(res.CPUMillis * cpuPeriod / 1000),
		}
	}
	if res.MemoryBytes > 0 {
		out.Memory = &specs.LinuxMemory{Limit: ptr(res.MemoryBytes)}
	}
	if res.Pids > 0 {
		out.Pids = &specs.LinuxPids{Limit: ptr(res.Pids)}
	}
	resources.SpecMemoryIO(out, limits(res))
	return out
}

// hostDevices prepares the host device nodes at paths for an environment.
// In a user namespace a device cannot be created, only bind-mounted, and the
// host node's owner (root, outside the environment's range) and mode would
// apply: so each node is recreated in dir, owned by the environment's root
// and usable by everyone inside (as udev does for /dev/fuse and
// /dev/net/tun), then bind-mounted. The cgroup rules allow exactly these
// devices. dir must be on a filesystem mounted without nodev.
func hostDevices(paths []string, dir string, owner uint32) ([]specs.Mount, []specs.LinuxDeviceCgroup, error) {
	var mounts []specs.Mount
	var rules []specs.LinuxDeviceCgroup
	if len(paths) > 0 {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, nil, fmt.Errorf("create device dir: %w", err)
		}
	}
	for i, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return nil, nil, fmt.Errorf("device %s: %w", p, err)
		}
		var typ string
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			typ = "c"
		case unix.S_IFBLK:
			typ = "b"
		default:
			return nil, nil, fmt.Errorf("device %s: not a device node", p)
		}
		node := filepath.Join(dir, fmt.Sprintf("%d-%s", i, filepath.Base(p)))
		if err := os.Remove(node); err != nil && !os.IsNotExist(err) {
			return nil, nil, fmt.Errorf("device %s: %w", p, err)
		}
		if err := unix.Mknod(node, st.Mode&unix.S_IFMT|0o666, int(st.Rdev)); err != nil {
			return nil, nil, fmt.Errorf("device %s: %w", p, err)
		}
		// mknod is subject to the umask.
		if err := os.Chmod(node, 0o666); err != nil {
			return nil, nil, fmt.Errorf("device %s: %w", p, err)
		}
		if err := os.Lchown(node, int(owner), int(owner)); err != nil {
			return nil, nil, fmt.Errorf("device %s: %w", p, err)
		}
		mounts = append(mounts, specs.Mount{Destination: filepath.Clean(p), Type: "bind", Source: node, Options: []string{"bind"}})
		major, minor := int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: ptr(major), Minor: ptr(minor), Access: "rwm"})
	}
	return mounts, rules, nil
}

func ptr[T any](v T) *T { return &v }
