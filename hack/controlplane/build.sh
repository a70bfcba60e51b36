#!/usr/bin/env bash
# Builds etcd, kube-apiserver and helm from the Go module proxy, once, into a cache
# outside the repository keyed by version (and by this module's go.sum, so a change of
# dependencies rebuilds). Prints the directory that holds the binaries.
#
#   hack/controlplane/build.sh          build what is missing, print the bin dir
#   hack/controlplane/build.sh --print  only print the bin dir (no build)
set -euo pipefail

K8S_VERSION=v1.36.3   # etcd's version is the one this release pins (see etcd/go.mod)
ETCD_VERSION=v3.6.8
HELM_VERSION=v3.22.0

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${BOTSESSION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/botsession}
sum=$(cat "$here"/apiserver/go.sum "$here"/etcd/go.sum | sha256sum | cut -c1-12)
bin="$cache_root/controlplane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-$sum"

if [[ "${1:-}" == "--print" ]]; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "build.sh: 'go' is not on PATH; install Go 1.26+ first" >&2; exit 1; }
mkdir -p "$bin"
export CGO_ENABLED=0

LOG_TAG=controlplane
# shellcheck source=hack/lib/build.sh
source "$here/../lib/build.sh"

build etcd bash -c "cd '$here/etcd' && go build -trimpath -o '$bin/etcd.tmp' go.etcd.io/etcd/server/v3 && mv '$bin/etcd.tmp' '$bin/etcd'"

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
ldflags+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
build kube-apiserver bash -c "cd '$here/apiserver' && go build -trimpath -ldflags '$ldflags' -o '$bin/kube-apiserver.tmp' . && mv '$bin/kube-apiserver.tmp' '$bin/kube-apiserver'"

helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
build helm bash -c "tmp=\$(mktemp -d) && GOBIN=\$tmp go install -trimpath -ldflags '$helm_ldflags' helm.sh/helm/v3/cmd/helm@$HELM_VERSION && mv \$tmp/helm '$bin/helm' && rmdir \$tmp"

echo "$bin"
