// Package deptest holds the repository's dependency test (deptest_test.go,
// after Tailscale's tstest/deptest): it lists every package's imports with
// `go list -deps` and each checked file's own imports with go/parser, and
// fails, naming the file and the import, when a package gains an import
// its room forbids:
//
//   - the user CLI (internal/cli, except the agent subcommand's file) and
//     internal/agentclient never depend on internal/agent, the server that
//     runs inside environments; they speak its wire protocol through
//     internal/agent/agentproto;
//   - the pure packages (devcontainer, compose, lifecycle, envconfig,
//     agentproto) never depend on host packages (runtime, netenv, image,
//     content, confine, build, runner, server, store, netlink, nftables)
//     and never import os/exec, syscall or golang.org/x/sys/unix
//     themselves.
//
// The package has no code of its own.
package deptest
