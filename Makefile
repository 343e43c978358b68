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

# fuse3 for fusermount3 (mounts without root, and their tests); iproute2
# for the network-namespace tests and bench sections (ip, tc), and
# nftables for the NAT tests' home routers; the tests skip without them.
deps:
	@missing=""; \
	if [ -e /dev/fuse ] && ! command -v fusermount3 >/dev/null 2>&1; then missing="$$missing fuse3"; fi; \
	if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then missing="$$missing iproute2"; fi; \
	if ! command -v nft >/dev/null 2>&1; then missing="$$missing nftables"; fi; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# -parallel: the slow-link tests spend minutes waiting on shaped links,
# not on the CPU, so more of them run at once than there are cores.
test: deps vet
	$(GO) test -race -count=1 -parallel 8 -timeout 20m ./...

# Figures with ratios against baselines measured in the same run.
bench: deps
	$(GO) run ./bench

# A quick run that proves the benchmark still works end to end.
bench-smoke: deps
	$(GO) run ./bench -short
