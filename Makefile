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
# The S3 server the S3 storage tests run against (Apache-2.0).
SEAWEEDFS_VERSION   := v0.0.0-20261109003541-7506e5f91cd6
# Deploy checks: helm lints and renders the chart, kubeconform validates it offline.
HELM_VERSION        := v3.22.0
KUBECONFORM_VERSION := v0.8.0

LDFLAGS := -s -w

.PHONY: all build run test test-unit test-e2e test-faults soak bench tools system-deps lint clean release image image-push image-load helm-schemas

# The version release binaries and images carry (`outpost version`).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
RELEASE_LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
DIST ?= $(CURDIR)/dist

all: build

# Static binaries: CGO off.
build: export CGO_ENABLED = 0
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/outpost ./cmd/outpost
	GOOS=linux GOARCH=amd64 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/outpost-linux-amd64 ./cmd/outpost
	GOOS=linux GOARCH=arm64 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/outpost-linux-arm64 ./cmd/outpost

# Static release binaries with the version embedded, and their SHA256SUMS, in $(DIST).
release: export CGO_ENABLED = 0
release:
	rm -rf $(DIST) && mkdir -p $(DIST)
	GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(RELEASE_LDFLAGS)' -o $(DIST)/outpost-linux-amd64 ./cmd/outpost
	GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(RELEASE_LDFLAGS)' -o $(DIST)/outpost-linux-arm64 ./cmd/outpost
	GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(RELEASE_LDFLAGS)' -o $(DIST)/outpost-linux-armv7 ./cmd/outpost
	cd $(DIST) && sha256sum outpost-linux-* > SHA256SUMS

# The container image (deploy/container/Containerfile), built daemonless by buildah
# (chroot isolation, vfs storage in a store of its own) for each of PLATFORMS, as one
# manifest list IMAGE. GO_IMAGE=host packs this machine's Go toolchain into the build
# stage (no container registry needed, and the host's module and build caches are
# lent to it); GO_IMAGE=docker.io/library/golang:1.26-bookworm works too.
IMAGE      ?= localhost/outpost:$(VERSION)
PLATFORMS  ?= linux/amd64,linux/arm64
GO_IMAGE   ?= host
IMAGE_ROOT ?= /var/tmp/outpost-buildah
BUILDAH    := buildah --root $(IMAGE_ROOT)/root --runroot $(IMAGE_ROOT)/run --storage-driver vfs
HOST_GO_IMAGE := localhost/outpost-go-builder:$(shell $(GO) env GOVERSION)
# The host builder is named by image ID: by name, buildah 1.28 looks for an arm64
# variant of it for the arm64 image (it does not honour FROM --platform=$BUILDPLATFORM).
image:
	@command -v buildah >/dev/null || { echo "buildah missing: apt-get install buildah (or make system-deps as root)"; exit 1; }
	@set -e; builder='$(GO_IMAGE)'; lend=""; \
	if [ "$$builder" = host ]; then \
	  BUILDAH='$(BUILDAH)' GO=$(GO) deploy/container/builder.sh $(HOST_GO_IMAGE); \
	  builder=$$($(BUILDAH) inspect --type image --format '{{.FromImageID}}' $(HOST_GO_IMAGE)); \
	  lend="--volume $$($(GO) env GOMODCACHE):/go/pkg/mod --volume $$($(GO) env GOCACHE):/root/.cache/go-build"; \
	fi; \
	image='$(IMAGE)'; \
	for d in $$($(BUILDAH) manifest inspect $(IMAGE) 2>/dev/null | awk -F'"' '/"digest"/{print $$4}'); do \
	  id=$$($(BUILDAH) inspect --type image --format '{{.FromImageID}}' "$${image%:*}@$$d" 2>/dev/null) && \
	  $(BUILDAH) rmi -f "$$id" >/dev/null 2>&1 || true; done; \
	$(BUILDAH) manifest rm $(IMAGE) >/dev/null 2>&1 || true; \
	echo "building $(IMAGE) for $(PLATFORMS)"; \
	$(BUILDAH) build --isolation chroot --format docker --platform $(PLATFORMS) --manifest $(IMAGE) \
	  --build-arg GO_IMAGE=$$builder $$lend \
	  --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) \
	  --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) \
	  -f deploy/container/Containerfile .

# Copy this machine's platform of the image into podman's own store (or
# LOAD_TO=containers-storage:[driver@root+runroot]), for podman run and compose.
LOAD_TO ?= containers-storage:
image-load:
	@set -e; arch=$$($(GO) env GOARCH); \
	digest=$$($(BUILDAH) manifest inspect $(IMAGE) | awk -F'"' -v a=$$arch '/"digest"/{d=$$4} /"architecture"/{if ($$4==a) print d}'); \
	[ -n "$$digest" ] || { echo "$(IMAGE) has no linux/$$arch image: make image first"; exit 1; }; \
	image='$(IMAGE)'; \
	id=$$($(BUILDAH) inspect --type image --format '{{.FromImageID}}' "$${image%:*}@$$digest"); \
	skopeo copy "containers-storage:[vfs@$(IMAGE_ROOT)/root+$(IMAGE_ROOT)/run]@$$id" "$(LOAD_TO)$(IMAGE)"

# Push the manifest list (every platform) to any registry, an Outpost node
# included: make image-push IMAGE=registry.example:5000/outpost:1.0 [PUSH_TO=other
# reference] [PUSH_FLAGS=--tls-verify=false]. Credentials: buildah login, or
# REGISTRY_AUTH_FILE.
PUSH_TO ?= $(IMAGE)
image-push:
	$(BUILDAH) manifest push --all --format v2s2 $(PUSH_FLAGS) $(IMAGE) docker://$(PUSH_TO)

# The Kubernetes and ServiceMonitor JSON schemas kubeconform checks the chart
# against offline (committed; from pinned Go modules, see deploy/helm/schemas/gen).
helm-schemas:
	$(GO) run ./deploy/helm/schemas/gen -out deploy/helm/schemas

# A root node on 127.0.0.1:5000 (gateway 127.0.0.1:4222), data in ./data.
run:
	$(GO) build -o $(BIN)/outpost ./cmd/outpost
	$(BIN)/outpost serve --data ./data

# -race needs cgo (gcc). The S3 tests run against bin/weed (tools builds it); with
# OUTPOST_REQUIRE_S3=1 they fail rather than skip when it is missing.
test: tools lint
	OUTPOST_REQUIRE_S3=1 CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m ./...

test-unit: lint
	CGO_ENABLED=1 $(GO) test -race -count=1 ./events/... ./registry/... ./node/... ./cmd/...

test-e2e: tools
	OUTPOST_REQUIRE_S3=1 $(GO) test -count=1 -timeout 20m ./test/...

# The fault-injection suite alone (it is part of make test too).
test-faults: tools
	$(GO) test -count=1 -timeout 20m -run 'TestFault|TestOutage|TestSyncWindows|TestBandwidth|TestConverge' ./test/

# The randomized convergence checker for as long as asked (make test runs a short
# version): SOAK_DURATION=30m or SOAK_ROUNDS=100; CONVERGE_SEED replays a seed.
SOAK_DURATION ?= 10m
soak: tools
	SOAK_DURATION=$(if $(SOAK_ROUNDS),,$(SOAK_DURATION)) $(GO) test -count=1 -v -timeout 0 -run 'TestConvergeRandom' ./test/

# A node against plain distribution, a tree against crane and regsync, a sync window,
# and a root on S3 (SeaweedFS) against one on the filesystem.
bench: tools
	$(GO) run ./test/bench node --registry $(BIN)/registry
	$(GO) run ./test/bench tree --crane $(BIN)/crane --regsync $(BIN)/regsync
	$(GO) run ./test/bench window
	$(GO) run ./test/bench s3 --weed $(BIN)/weed
	$(GO) run ./test/bench failover --weed $(BIN)/weed
	$(GO) run ./test/bench fanout --children 1000 --rounds 2 --idle 5s
	$(GO) run ./test/bench fanout --children 1000 --rounds 2 --idle 5s --members 3 --weed $(BIN)/weed

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$bad" ]; then echo "gofmt would change: $$bad"; exit 1; fi
	$(GO) vet ./...

tools: system-deps $(BIN)/crane $(BIN)/oras $(BIN)/conformance $(BIN)/registry $(BIN)/regsync $(BIN)/regctl $(BIN)/weed $(BIN)/helm $(BIN)/kubeconform

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
# SeaweedFS: `go install` refuses it (its go.mod has replace directives), so build the
# downloaded module in a writable copy (the module cache is read-only). About 8 min cold
# on 2 cores, 2.6 GB of memory. Run outside any module and workspace, whatever GOFLAGS
# says (-mod=vendor would fail: the module ships no vendor directory).
$(BIN)/weed:
	@set -euo pipefail; tmp=$$(mktemp -d); trap 'chmod -R u+w "$$tmp"; rm -rf "$$tmp"' EXIT; \
	  dir=$$(cd "$$tmp" && GOWORK=off GOFLAGS=-mod=mod $(GO) mod download -json github.com/seaweedfs/seaweedfs@$(SEAWEEDFS_VERSION) \
	    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$$/\1/p'); \
	  if [ -z "$$dir" ] || [ ! -d "$$dir/weed" ]; then echo "seaweedfs $(SEAWEEDFS_VERSION): no module directory"; exit 1; fi; \
	  cp -R "$$dir" "$$tmp/src"; chmod -R u+w "$$tmp/src"; \
	  echo "building weed (SeaweedFS $(SEAWEEDFS_VERSION)), several minutes"; \
	  cd "$$tmp/src" && GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o "$$tmp/weed" ./weed; \
	  mkdir -p $(BIN) && mv "$$tmp/weed" $(BIN)/weed
$(BIN)/helm:
	GOBIN=$(BIN) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
$(BIN)/kubeconform:
	GOBIN=$(BIN) $(GO) install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)

# From Debian: skopeo and podman (clients under test), gcc (for -race), prlimit and
# mount (the file descriptor and full-disk tests); for the deploy checks buildah and
# a static busybox (the image), runc (runs it: crun refuses hybrid cgroups), systemd
# (systemd-analyze) and podman-compose; chromium (the status page test). As root they
# are installed; otherwise we say how.
system-deps:
	@missing=""; command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	  command -v podman >/dev/null || missing="$$missing podman"; \
	  command -v buildah >/dev/null || missing="$$missing buildah"; \
	  command -v runc >/dev/null || missing="$$missing runc"; \
	  { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || missing="$$missing busybox-static"; \
	  command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	  command -v podman-compose >/dev/null || missing="$$missing podman-compose"; \
	  command -v gcc >/dev/null || missing="$$missing gcc libc6-dev"; \
	  command -v prlimit >/dev/null || missing="$$missing util-linux"; \
	  command -v mount >/dev/null || missing="$$missing mount"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    else echo "missing:$$missing; run: sudo apt-get install -y$$missing"; exit 1; fi; fi

clean:
	rm -rf $(BIN) ./results $(DIST)
