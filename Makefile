# The two commands README.md gives a new user: `make run` (a node with its
# mount on built-in defaults) and `make test` (everything CI runs).

GO      ?= go
BIN     ?= bin/meshfs
MOUNT   ?= /mnt/net
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: build run test vet deps bench bench-smoke

build:
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/meshfs

# Root mounts directly; other users need fusermount3 (Debian: fuse3), which
# `make deps` installs.
run: build
	$(BIN) daemon --mount $(MOUNT)

deps:
	@if [ -e /dev/fuse ] && ! command -v fusermount3 >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq fuse3 >/dev/null; \
	fi

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

test: deps vet
	$(GO) test -race -count=1 -timeout 20m ./...

# Figures with ratios against baselines measured in the same run.
bench:
	$(GO) run ./bench

# A quick run that proves the benchmark still works end to end.
bench-smoke:
	$(GO) run ./bench -short
