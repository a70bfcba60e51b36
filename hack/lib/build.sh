# Sourced by hack/*/build.sh: `log` and a cached `build`. The caller sets $bin (the cache
# folder, keyed by versions) and $LOG_TAG before sourcing.

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }

build() {  # name, command...: run the command unless $bin/name is there already
  local name=$1; shift
  if [[ -x "$bin/$name" ]]; then return 0; fi
  log "building $name (cold builds take minutes; cached in $bin)"
  local start=$SECONDS
  "$@"
  log "built $name in $((SECONDS - start)) s"
}
