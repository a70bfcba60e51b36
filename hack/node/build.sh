#!/usr/bin/env bash
# Builds the node side of a real single-node cluster from the Go module proxy, once, into a
# cache outside the repository keyed by version (and by these modules' go.sum, so a change
# of dependencies rebuilds): kubelet, kube-scheduler, kube-controller-manager and kube-proxy
# of the same Kubernetes release as hack/controlplane's kube-apiserver, CoreDNS (the
# cluster's DNS, with only the plugins it needs: coredns/main.go) and the pod sandbox's
# `pause` (build/pause/linux/pause.c of the same kubernetes module, gcc -static).
# Prints the directory that holds the binaries.
#
#   hack/node/build.sh          build what is missing, print the bin dir
#   hack/node/build.sh --print  only print the bin dir (no build)
set -euo pipefail

K8S_VERSION=v1.36.3      # the kube-apiserver's (hack/controlplane/build.sh)
COREDNS_VERSION=v1.15.0  # see coredns/go.mod
PAUSE_VERSION=3.10.2     # build/pause/Makefile's TAG in K8S_VERSION

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${BOTSESSION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/botsession}
sum=$(cat "$here"/kube/go.sum "$here"/coredns/go.sum | sha256sum | cut -c1-12)
bin="$cache_root/node/k8s-$K8S_VERSION-coredns-$COREDNS_VERSION-pause-$PAUSE_VERSION-$sum"

if [[ "${1:-}" == "--print" ]]; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "build.sh: 'go' is not on PATH; install Go 1.26+ first" >&2; exit 1; }
command -v gcc >/dev/null || { echo "build.sh: 'gcc' is not on PATH (Debian: gcc libc6-dev)" >&2; exit 1; }
mkdir -p "$bin"
export CGO_ENABLED=0

LOG_TAG=node
# shellcheck source=hack/lib/build.sh
source "$here/../lib/build.sh"

# The version stamps of hack/lib/version.sh, as the kube-apiserver gets them.
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
ldflags+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
for cmd in kube-proxy kube-scheduler kube-controller-manager kubelet; do
  build "$cmd" bash -c "cd '$here/kube' && go build -trimpath -ldflags '$ldflags' -o '$bin/$cmd.tmp' k8s.io/kubernetes/cmd/$cmd && mv '$bin/$cmd.tmp' '$bin/$cmd'"
done

coredns_ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
build coredns bash -c "cd '$here/coredns' && go build -trimpath -ldflags '$coredns_ldflags' -o '$bin/coredns.tmp' . && mv '$bin/coredns.tmp' '$bin/coredns'"

build_pause() {  # from the kubernetes module's source (in the module cache after `go build`)
  local src
  src=$(cd "$here/kube" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION" -o "$bin/pause.tmp" "$src/build/pause/linux/pause.c"
  strip "$bin/pause.tmp"
  mv "$bin/pause.tmp" "$bin/pause"
}
build pause build_pause

echo "$bin"
