# cove — see README.md.
GO        ?= go
PREFIX    ?= /usr/local
BIN       := bin/cove
GOBIN     := $(shell $(GO) env GOPATH)/bin

.PHONY: all build up deps test-deps test test-stress proto bench-start bench-density bench-interactive bench-io bench-disk bench-backup clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/cove

# Everything cove needs at run time on a Debian host.
deps:
	./scripts/install-deps.sh runtime

# First README command: install, build, start server + runner on embedded defaults.
up: deps build
	install -m 0755 $(BIN) $(PREFIX)/bin/cove
	$(PREFIX)/bin/cove up

# Second README command: install what the tests need, then run them all.
test-deps:
	./scripts/install-deps.sh test

test: test-deps build
	./scripts/test.sh

# `make test` RUNS times in a row (default 5) beside a CPU hog (stress-ng
# --cpu CPU_HOGS, default all cores), as on a loaded machine: tests that
# assume how fast things happen fail here. See docs/testing.md.
test-stress: test-deps build
	./scripts/test-stress.sh

# Regenerate the API code from proto/cove/v1 (generated code is committed).
proto:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
	PATH=$(GOBIN):$$PATH protoc -I proto --go_out=proto --go_opt=paths=source_relative \
		--connect-go_out=proto --connect-go_opt=paths=source_relative proto/cove/v1/cove.proto

bench-start: build
	$(GO) run ./bench/start

# N idle environments (default 100): CPU and memory each, N-th start time
# next to the first. As root; see docs/performance.md.
bench-density: build
	$(GO) run ./bench/density -cove $(BIN)

# Keystroke echo latency over OpenSSH while environments saturate the CPUs,
# per CPU policy. As root; see docs/performance.md.
bench-interactive: build
	$(GO) run ./bench/interactive -cove $(BIN)

# fsync latency in one environment while a neighbour writes as fast as it
# can, without and with the class's IO limits. As root; see
# docs/performance.md.
bench-io: build
	$(GO) run ./bench/io -cove $(BIN)

# A disk quota per environment: loop-mounted ext4 image vs btrfs qgroup vs
# a plain directory, setup cost and IO overhead. As root; see
# docs/performance.md.
bench-disk:
	$(GO) run ./bench/disk

# Backups: cove vs tar | zstd vs restic on a generated ~1 GiB workspace
# (full, incremental after a ~1% change, restore checked against the
# source). As root, with scripts/install-deps.sh bench; see
# docs/performance.md.
bench-backup:
	$(GO) run ./bench/backup

clean:
	rm -rf bin
