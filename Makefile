# Outpost: see README.md. Every target runs on a fresh Debian 12 machine with Go.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

# Pinned clients the tests drive and the benchmarks measure against (regsync and
# regctl come from one module, one version).
CRANE_VERSION       := v0.22.1
ORAS_VERSION        := v1.3.6
CONFORMANCE_VERSION := v0.0.0-20260831232431-97274622c111
REGISTRY_VERSION    := v3.1.2
REGSYNC_VERSION     := v0.11.7

LDFLAGS := -s -w

.PHONY: all build run test test-unit test-e2e test-faults soak bench tools system-deps lint clean

all: build

# Static binaries: CGO off.
build: export CGO_ENABLED = 0
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/outpost ./cmd/outpost
	GOOS=linux GOARCH=amd64 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/outpost-linux-amd64 ./cmd/outpost
	GOOS=linux GOARCH=arm64 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/outpost-linux-arm64 ./cmd/outpost

# A root node on 127.0.0.1:5000 (gateway 127.0.0.1:4222), data in ./data.
run:
	$(GO) build -o $(BIN)/outpost ./cmd/outpost
	$(BIN)/outpost serve --data ./data

# -race needs cgo (gcc).
test: tools lint
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m ./...

test-unit: lint
	CGO_ENABLED=1 $(GO) test -race -count=1 ./events/... ./registry/... ./node/... ./cmd/...

test-e2e: tools
	$(GO) test -count=1 -timeout 20m ./test/...

# The fault-injection suite alone (it is part of make test too).
test-faults: tools
	$(GO) test -count=1 -timeout 20m -run 'TestFault|TestOutage|TestSyncWindows|TestBandwidth|TestConverge' ./test/

# The randomized convergence checker for as long as asked (make test runs a short
# version): SOAK_DURATION=30m or SOAK_ROUNDS=100; CONVERGE_SEED replays a seed.
SOAK_DURATION ?= 10m
soak: tools
	SOAK_DURATION=$(if $(SOAK_ROUNDS),,$(SOAK_DURATION)) $(GO) test -count=1 -v -timeout 0 -run 'TestConvergeRandom' ./test/

# Two suites: a node against plain distribution, and a tree against crane and regsync.
bench: tools
	$(GO) run ./test/bench node --registry $(BIN)/registry
	$(GO) run ./test/bench tree --crane $(BIN)/crane --regsync $(BIN)/regsync
	$(GO) run ./test/bench window

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$bad" ]; then echo "gofmt would change: $$bad"; exit 1; fi
	$(GO) vet ./...

tools: system-deps $(BIN)/crane $(BIN)/oras $(BIN)/conformance $(BIN)/registry $(BIN)/regsync $(BIN)/regctl

$(BIN)/crane:
	GOBIN=$(BIN) $(GO) install github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION)
$(BIN)/oras:
	GOBIN=$(BIN) $(GO) install oras.land/oras/cmd/oras@$(ORAS_VERSION)
$(BIN)/conformance:
	GOBIN=$(BIN) $(GO) install github.com/opencontainers/distribution-spec/conformance@$(CONFORMANCE_VERSION)
$(BIN)/registry:
	GOBIN=$(BIN) $(GO) install github.com/distribution/distribution/v3/cmd/registry@$(REGISTRY_VERSION)
$(BIN)/regsync:
	GOBIN=$(BIN) $(GO) install github.com/regclient/regclient/cmd/regsync@$(REGSYNC_VERSION)
$(BIN)/regctl:
	GOBIN=$(BIN) $(GO) install github.com/regclient/regclient/cmd/regctl@$(REGSYNC_VERSION)

# From Debian: skopeo and podman (clients under test), gcc (for -race), prlimit and
# mount (the file descriptor and full-disk tests), chromium (the status page test). As root
# they are installed; otherwise we say how.
system-deps:
	@missing=""; command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	  command -v podman >/dev/null || missing="$$missing podman"; \
	  command -v gcc >/dev/null || missing="$$missing gcc libc6-dev"; \
	  command -v prlimit >/dev/null || missing="$$missing util-linux"; \
	  command -v mount >/dev/null || missing="$$missing mount"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    else echo "missing:$$missing; run: sudo apt-get install -y$$missing"; exit 1; fi; fi

clean:
	rm -rf $(BIN) ./results
