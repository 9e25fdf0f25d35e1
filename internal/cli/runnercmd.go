package cli

import (
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/build"
	"github.com/covedev/cove/internal/procgroups"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/runner"
	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
)

func addRunnerFlags(cmd *cobra.Command, o *runnerOptions) {
	f := cmd.Flags()
	f.StringVar(&o.sshListen, "ssh-listen", o.sshListen, "SSH gateway listen address")
	f.StringVar(&o.sshAdvertise, "ssh-advertise", "", "SSH gateway address users dial (default: the listen address, or HOSTNAME:PORT when listening on all addresses)")
	f.StringVar(&o.defaultImage, "default-image", "mcr.microsoft.com/devcontainers/base:bookworm", "image for repositories without a devcontainer.json image")
	f.StringVar(&o.runc, "runc", "runc", "OCI runtime binary")
	f.StringVar(&o.runcRoot, "runc-root", "/run/cove/runc", "OCI runtime state directory")
	f.StringVar(&o.cgroupParent, "cgroup-parent", "cove", "parent cgroup of environments")
	f.Uint32Var(&o.rangeBase, "uid-range-base", 1<<24, "first host uid/gid of environments' user namespace ranges (65536 each; keep ranges below 2^31 for ping)")
	f.IntVar(&o.maxEnvs, "max-environments", 32, "most environments this runner runs")
	// Sized for this host so a few busy environments cannot OOM it (see
	// resources.DefaultClassSize and docs/runners.md#classes).
	defCPUs, defMemory := resources.HostDefaultClassSize()
	f.Int32Var(&o.classCPUs, "class-cpus", defCPUs, "CPUs of each environment of the default class; defaults to half this host's CPUs, at least 1")
	f.Int64Var(&o.classMemory, "class-memory", defMemory, "memory limit (bytes) of each environment of the default class; defaults to a quarter of this host's memory after a reserve of min(1 GiB, 10%) for the runner, at least 1 GiB")
	f.Int64Var(&o.classDisk, "class-disk", 0, "disk quota (bytes) of each environment of the default class: its workspace, file system changes and volumes live in an ext4 image of this size, and df inside shows it (0: none, the data dir's file system is shared; needs loop devices and mkfs.ext4, or the runner refuses to start)")
	f.Int32Var(&o.classPids, "class-pids", defaultClassPids, "most processes and threads of each environment of the default class (a fork bomb stops there; -1: no limit)")
	f.IntVar(&o.classLimits.MemoryHighPercent, "class-memory-high", runner.DefaultMemoryHighPercent, "reclaim target of the default class, percent of --class-memory: memory above it is reclaimed first (v1 soft limit, v2 memory.high); 100: none")
	f.Int64Var(&o.classLimits.SwapBytes, "class-swap", 0, "swap (bytes) each environment of the default class may use beyond --class-memory, where the host has swap: 0 none, -1 unlimited")
	f.Uint64Var(&o.classLimits.ReadBPS, "class-io-read-bps", 0, "read limit of the default class on the data dir's disk, bytes/s (0: none)")
	f.Uint64Var(&o.classLimits.WriteBPS, "class-io-write-bps", 0, "write limit of the default class on the data dir's disk, bytes/s (0: none)")
	f.Uint64Var(&o.classLimits.ReadIOPS, "class-io-read-iops", 0, "read operations per second of the default class on the data dir's disk (0: no limit)")
	f.Uint64Var(&o.classLimits.WriteIOPS, "class-io-write-iops", 0, "write operations per second of the default class on the data dir's disk (0: no limit)")
	f.StringVar(&o.classesFile, "classes", "", "a file (JSON with comments) defining every class this runner offers, each with its whole resource definition, instead of the --class-* flags (docs/runners.md#classes)")
	o.flags = f
	f.BoolVar(&o.cpuControl, "cpu-control", true, "run the CPU control loop: each environment is guaranteed its class's CPUs and may burst into what the others leave idle, up to the whole host (false: a static quota of the class's CPUs)")
	f.BoolVar(&o.processGroups, "process-groups", true, "sort each environment's processes into CPU groups: its agent first, terminal sessions next, everything else (and any terminal job that burns CPU) last, so a build does not make its own terminal lag")
	f.Float64Var(&o.demoteShare, "process-groups-demote", procgroups.DefaultParams.DemoteShare, "with --process-groups: the share of one CPU above which a terminal's job (over the last second) moves to the workload group")
	f.Int32Var(&o.classCPUBurst, "class-cpu-burst", 0, "most CPUs each environment of the default class may burst to with the CPU control loop, at least --class-cpus (0: the whole host)")
	f.BoolVar(&o.network, "network", true, "give environments a bridge, NAT egress, DNS and firewall rules (false: loopback only)")
	f.StringVar(&o.bridge, "bridge", "cove0", "bridge environments attach to")
	f.StringVar(&o.subnet, "subnet", "10.213.0.0/16", "environments' addresses; the bridge takes the first")
	f.StringVar(&o.nftTable, "nft-table", "cove", "nftables table (inet and bridge families) the runner owns")
	f.StringSliceVar(&o.dnsUpstreams, "dns-upstream", nil, "DNS servers (ip:port) the relay forwards to (default: the host's /etc/resolv.conf)")
	f.StringVar(&o.classEgress, "class-egress", "allow-all", "egress policy of the default class: allow-all, deny-private or allowlist")
	f.StringSliceVar(&o.classEgressAllow, "class-egress-allow", nil, "for allowlist: CIDR or CIDR:PORT entries")
	f.Int64Var(&o.classEgressRate, "class-egress-rate", 0, "egress limit of the default class, bits/s (0: none)")
	f.Int64Var(&o.classIngressRate, "class-ingress-rate", 0, "ingress limit of the default class, bits/s (0: none)")
	f.StringVar(&o.proxyListen, "proxy-listen", o.proxyListen, "HTTP port proxy listen address (empty: no proxy)")
	f.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus metrics (environments' CPU, memory, IO, pids, OOM kills; runner) at http://ADDRESS/metrics, e.g. 127.0.0.1:9464 (empty: off; unauthenticated: keep it on loopback or a management network)")
	f.StringVar(&o.proxyURL, "proxy-url", "", "base URL users reach the port proxy on (default: http(s)://LISTEN or HOSTNAME:PORT)")
	f.StringVar(&o.proxyDomain, "proxy-domain", "", "wildcard domain for the host form PORT--ENV.DOMAIN (DNS for DOMAIN and *.DOMAIN must point here)")
	f.StringVar(&o.proxyTLSCert, "proxy-tls-cert", "", "serve the port proxy over HTTPS with this certificate (PEM)")
	f.StringVar(&o.proxyTLSKey, "proxy-tls-key", "", "private key (PEM) for --proxy-tls-cert")
	f.StringVar(&o.buildkitd, "buildkitd", "", "buildkitd binary for devcontainer.json Dockerfile builds (default: "+build.DefaultBuildkitd+" if present; none: no builds)")
	f.Float64Var(&o.buildCPUs, "build-cpus", float64(defCPUs), "CPUs Dockerfile builds (buildkitd and every RUN step, all builds together) may use; defaults to half this host's CPUs, at least 1 (0: no limit)")
	f.Int64Var(&o.buildLimits.MemoryBytes, "build-memory", defMemory, "memory limit (bytes) of Dockerfile builds together; defaults to the default class's memory (0: no limit)")
	f.Int64Var(&o.buildLimits.Pids, "build-pids", 16384, "most processes and threads of Dockerfile builds together (0: no limit)")
	f.Uint64Var(&o.buildLimits.ReadBPS, "build-io-read-bps", 0, "read limit of Dockerfile builds together on the data dir's disk, bytes/s (0: none)")
	f.Uint64Var(&o.buildLimits.WriteBPS, "build-io-write-bps", 100<<20, "write limit of Dockerfile builds together on the data dir's disk, bytes/s (0: none)")
	f.Float64Var(&o.unpackCPUs, "unpack-cpus", float64(defCPUs), "CPUs unpacking image layers (decompressing and writing them, in a child process of the runner) may use; defaults to half this host's CPUs, at least 1 (0: no limit)")
	f.Int64Var(&o.unpackLimits.MemoryBytes, "unpack-memory", 1<<30, "memory limit (bytes) of image unpacking, page cache of the written files included (0: no limit)")
	f.Uint64Var(&o.unpackLimits.WriteBPS, "unpack-io-write-bps", 100<<20, "write limit of image unpacking on the data dir's disk, bytes/s (0: none)")
	f.IntVar(&o.runnerCPUWeight, "runner-cpu-weight", runner.DefaultRunnerCPUWeight, "run the runner (SSH gateway, port proxy, control loops) in a cgroup of its own next to --cgroup-parent (PARENT.runner) with this CPU weight (1-10000, v2 cpu.weight scale, 100 = a default cgroup; v1 cpu.shares = weight × 1024 / 100), so terminals stay responsive while environments build; what the runner starts does not inherit it (0: off, the runner stays in the cgroup it was started in)")
	f.DurationVar(&o.autoStopWarning, "autostop-warning", runner.DefaultAutoStopWarning, "warn open terminals this long before an environment stops on its own (at most half its timeout)")
	addBackupFlags(cmd, &o.backup)
	f.StringSliceVar(&o.buildInsecureRegistries, "build-insecure-registry", nil, "registries (host:port) Dockerfile builds reach over plain HTTP")
	f.BoolVar(&o.buildAllowCacheFrom, "build-allow-cache-from", false, "let devcontainer.json build.cacheFrom import build cache from registries into this runner's shared BuildKit cache (only if every user may trust every such registry; default: ignored with a warning)")
	f.StringSliceVar(&o.insecureRegistries, "insecure-registry", nil, "registries and feature hosts (HOST or HOST:PORT, e.g. 127.0.0.1:5000) the runner fetches from over plain HTTP; each is also allowed past the private-address check")
	f.StringSliceVar(&o.allowPrivateFetch, "allow-private-fetch", nil, "non-public destinations the runner may pull images and features from (CIDR, IP, IP:PORT, HOST or HOST:PORT); by default only public addresses")
}

// RunnerCommand is `cove runner`: run a runner, or manage runners.
func RunnerCommand() *cobra.Command {
	o := runnerOptions{sshListen: ":7722", proxyListen: ":7743"}
	cmd := &cobra.Command{
		Use:   "runner --server URL [--join-token TOKEN]",
		Short: "Run a runner on this host (as root), or manage runners",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.server == "" {
				return fmt.Errorf("--server is required")
			}
			ctx, cancel := signalContext(cmd.Context())
			defer cancel()
			o.server = strings.TrimRight(o.server, "/")
			return runRunner(ctx, newLogger(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.server, "server", "", "server URL")
	f.StringVar(&o.serverPublicURL, "server-public-url", "", "the server's URL as browsers reach it, for port logins (default: --server)")
	f.StringVar(&o.joinToken, "join-token", "", "one-time join token (from `cove runner join-token`), needed the first time")
	f.StringVar(&o.name, "name", "", "runner name (default: host name)")
	f.StringVar(&o.dataDir, "data-dir", filepath.Join("/var/lib/cove", "runner"), "where the runner keeps images and environments")
	f.BoolVar(&o.allowLocal, "allow-local-sources", false, "accept environments whose source is a path (or file:// URL) on this host; it is read as root, so only for single-user hosts")
	addRunnerFlags(cmd, &o)
	cmd.AddCommand(runnerJoinToken(), runnerList(), runnerRemove(), runnerClassList())
	return cmd
}

func runnerJoinToken() *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "join-token",
		Short: "Print a one-time token a new runner joins with (owners only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, cfg, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Runners.CreateJoinToken(cmd.Context(), connect.NewRequest(&covev1.CreateJoinTokenRequest{TtlSeconds: int64(ttl.Seconds())}))
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), resp.Msg.JoinToken)
			fmt.Fprintf(cmd.ErrOrStderr(), "On the new host (as root): cove runner --server %s --join-token %s\n", cfg.Server, resp.Msg.JoinToken)
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	return cmd
}

func runnerList() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List runners",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Runners.ListRunners(cmd.Context(), connect.NewRequest(&covev1.ListRunnersRequest{}))
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID\tPHASE\tENVIRONMENTS\tSSH\tLAST SEEN")
			for _, r := range resp.Msg.Runners {
				// Runners report their own names and addresses: remote text.
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s ago\n", termsafe.Line(r.Name), termsafe.Line(r.Id), strings.TrimPrefix(r.Phase.String(), "RUNNER_PHASE_"),
					r.Environments, r.Capabilities.GetMaxEnvironments(), termsafe.Line(r.Capabilities.GetSshAddress()), age(r.LastSeen.AsTime()))
			}
			return tw.Flush()
		},
	}
}

// ServerCommand is `cove server`: the control plane alone.
func ServerCommand() *cobra.Command {
	o := serverOptions{}
	var bootstrapUser string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane (API, scheduler, controllers)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signalContext(cmd.Context())
			defer cancel()
			log := newLogger()
			errc := make(chan error, 1)
			rs, err := startServer(ctx, log, o, errc)
			if err != nil {
				return err
			}
			if bootstrapUser != "" {
				_, tok, err := rs.srv.Bootstrap(ctx, bootstrapUser, "")
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "Owner %s: cove login --server %s --token %s\n", bootstrapUser, rs.url, tok)
			}
			select {
			case <-ctx.Done():
				return nil
			case err := <-errc:
				return err
			}
		},
	}
	addServerFlags(cmd, &o)
	cmd.Flags().StringVar(&bootstrapUser, "bootstrap-user", "", "create this owner if missing and print a new token for it")
	return cmd
}
