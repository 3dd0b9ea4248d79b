#!/usr/bin/env bash
# builder.sh IMAGE: packs this machine's Go toolchain (GOROOT, static binaries), a
# static busybox as the shell and the CA bundle into a local build-stage image for
# the Containerfile (GO_IMAGE=IMAGE), so that `make image` needs no container
# registry. Does nothing if IMAGE exists. BUILDAH is the buildah command line
# (with its --root/--storage-driver); GO is the go command.
set -euo pipefail
image=$1
BUILDAH=${BUILDAH:-buildah}
GO=${GO:-go}
if $BUILDAH inspect --type image "$image" >/dev/null 2>&1; then
  exit 0
fi
goroot=$($GO env GOROOT)
busybox=$(command -v busybox) || { echo "builder.sh: busybox missing: apt-get install busybox-static" >&2; exit 1; }
ctr=$($BUILDAH from --isolation chroot scratch)
trap '$BUILDAH rm "$ctr" >/dev/null' EXIT
$BUILDAH copy "$ctr" "$goroot" /usr/local/go >/dev/null
$BUILDAH copy "$ctr" "$busybox" /bin/busybox >/dev/null
$BUILDAH copy "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
$BUILDAH run --isolation chroot "$ctr" /bin/busybox mkdir -p /usr/bin /sbin /usr/sbin /tmp /go /root ||
  { echo "builder.sh: $busybox does not run alone (a dynamic build?): apt-get install busybox-static" >&2; exit 1; }
$BUILDAH run --isolation chroot "$ctr" /bin/busybox --install -s
$BUILDAH config --env PATH=/usr/local/go/bin:/go/bin:/usr/local/bin:/usr/bin:/bin \
  --env GOPATH=/go --env GOROOT=/usr/local/go --env GOCACHE=/root/.cache/go-build --env HOME=/root --workingdir /go \
  --label org.opencontainers.image.description="Go $($GO env GOVERSION) from the build host, for Outpost's Containerfile" "$ctr"
$BUILDAH commit --quiet "$ctr" "$image" >/dev/null
echo "builder.sh: made $image from $goroot"
