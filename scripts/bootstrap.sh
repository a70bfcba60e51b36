#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine, idempotently:
#   Debian packages (redis-server, postgresql, chromium, wrk, prometheus, and for the local cluster
#   containerd, runc, the CNI plugins, iptables, iproute2, util-linux, debootstrap, gcc),
#   the Python venv with the project and its dev dependencies, and the control-plane and
#   node binaries (cached outside the repo, see hack/controlplane/build.sh and
#   hack/node/build.sh).
# Each step is skipped when already done, so a warm run takes seconds.
#
#   scripts/bootstrap.sh            everything
#   scripts/bootstrap.sh --no-controlplane   skip the Go builds (unit work only)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------------
need_pkgs=()
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v chromium >/dev/null || need_pkgs+=(chromium)
command -v wrk >/dev/null || need_pkgs+=(wrk)  # the load generator of bench/api_benchmark.py
# the real Prometheus (and promtool) that tests/integration/test_grafana.py runs the
# dashboard's queries and the alert rules against
command -v prometheus >/dev/null || need_pkgs+=(prometheus)
# the local cluster (devstack/cluster, devstack/image): container runtime, network, images
command -v containerd >/dev/null || need_pkgs+=(containerd)
command -v runc >/dev/null || [[ -x /usr/sbin/runc ]] || need_pkgs+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need_pkgs+=(containernetworking-plugins)
command -v iptables >/dev/null || [[ -x /usr/sbin/iptables ]] || need_pkgs+=(iptables)
command -v ip >/dev/null || [[ -x /usr/sbin/ip ]] || need_pkgs+=(iproute2)
command -v nsenter >/dev/null || need_pkgs+=(util-linux)
command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || need_pkgs+=(debootstrap)
command -v gcc >/dev/null || need_pkgs+=(gcc)
[[ -e /usr/include/stdio.h ]] || need_pkgs+=(libc6-dev)  # the static pause binary
command -v openssl >/dev/null || need_pkgs+=(openssl)
# the image's wheels are built by Debian's python3 (the image's own interpreter)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
if ((${#need_pkgs[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  log "installing Debian packages: ${need_pkgs[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # The packages start system-wide services; the project runs private instances instead.
  $sudo service redis-server stop >/dev/null 2>&1 || true
  $sudo service postgresql stop >/dev/null 2>&1 || true
  $sudo service containerd stop >/dev/null 2>&1 || true
  $sudo service prometheus stop >/dev/null 2>&1 || true
fi

# --- Python venv -----------------------------------------------------------------
python=${PYTHON:-python3}
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -f $stamp ]]; then
  log "creating .venv and installing the project with its dev dependencies"
  [[ -x .venv/bin/python ]] || "$python" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# --- control plane and node binaries ---------------------------------------------
if [[ "${1:-}" != "--no-controlplane" ]]; then
  hack/controlplane/build.sh >/dev/null
  hack/node/build.sh >/dev/null
fi
log "ready"
