#!/usr/bin/env bash
# Several nodes (issue 8, "Done when"): PostgreSQL, moto (S3) and Azurite started by
# scripts/services.sh, three `wharf serve` nodes over one database and one bucket prefix, and
# the checks in scripts/lib/multinode.py: a webhook created on one node fires for pushes on the
# others; skopeo pushes through a round-robin proxy (each upload's requests spread across
# nodes, chunked uploads too) and pulls from every node; kill -9 of a node during 1,000 pushes
# (every acknowledged push readable from every node, every event delivered with duplicates only
# under the same id, the dead node's leased deliveries resumed within the lease bound); garbage
# collection running throughout without losing a blob.
#
# Usage: scripts/multinode.sh
#
# Environment:
#   MULTINODE_WHARF_BIN=path  use this wharf binary and skip the build; otherwise
#                             `cargo build -p wharf --bin wharf` (debug; CARGO_TARGET_DIR honoured)
#   MULTINODE_PUSHES=N        pushes in the kill -9 run (default 1000)
#   MULTINODE_KEEP=1          keep the work directory (server logs, service logs)
#   MULTINODE_NO_INSTALL=1    do not install missing tools (skopeo, python3)
#   MULTINODE_VERBOSE=1       Python tracebacks for a check that crashes
#   (more tunables in scripts/lib/multinode.py's header)
#
# Output: each check with its figures, then PASS/FAIL per check and
# `multinode: N passed, M failed`. Exit status non-zero if any check fails or a service or
# node cannot start. Everything listens on 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wharf-multinode.XXXXXX")
DRIVER_PID=
SERVICES_UP=0

cleanup() {
  local rc=$?
  set +e
  if [[ -n $DRIVER_PID ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    kill "$DRIVER_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DRIVER_PID" 2>/dev/null
    wait "$DRIVER_PID" 2>/dev/null
  fi
  # Every node the driver started is listed in $WORK/pids. Kill by id, and only a process
  # whose command line names $WORK (its data directory): a reused id is left alone.
  if [[ -f $WORK/pids ]]; then
    local pid
    while read -r pid; do
      [[ -n $pid && -r /proc/$pid/cmdline ]] || continue
      if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$WORK"; then
        kill -9 "$pid" 2>/dev/null
      fi
    done <"$WORK/pids"
  fi
  if [[ $SERVICES_UP == 1 ]]; then
    "$ROOT/scripts/services.sh" stop "$WORK/svc"
  fi
  if [[ ${MULTINODE_KEEP:-0} == 1 ]]; then
    echo "multinode: work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "multinode: interrupted" >&2; exit 130' INT
trap 'echo "multinode: terminated" >&2; exit 143' TERM

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "multinode: need root (or sudo) to run: $*" >&2; return 1
  fi
}

# Debian packages, as scripts/e2e.sh installs them (PostgreSQL, moto and Azurite are
# services.sh's; psql comes with PostgreSQL).
ensure_packages() {
  local -a pkgs=()
  local pair
  for pair in skopeo:skopeo python3:python3; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || pkgs+=("${pair#*:}")
  done
  ((${#pkgs[@]})) || return 0
  if [[ ${MULTINODE_NO_INSTALL:-0} == 1 ]]; then
    echo "multinode: missing ${pkgs[*]} (MULTINODE_NO_INSTALL=1)" >&2
    exit 1
  fi
  echo "multinode: installing ${pkgs[*]} (apt-get)"
  if ! { as_root apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"; } \
    >"$WORK/apt.log" 2>&1; then
    tail -n 30 "$WORK/apt.log" >&2
    echo "multinode: apt-get install failed" >&2
    exit 1
  fi
}

ensure_packages

if [[ -n ${MULTINODE_WHARF_BIN:-} ]]; then
  BIN=$MULTINODE_WHARF_BIN
else
  echo "multinode: cargo build -p wharf --bin wharf"
  (cd "$ROOT" && cargo build -q -p wharf --bin wharf)
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/wharf
fi
[[ -x $BIN ]] || { echo "multinode: no wharf binary at $BIN" >&2; exit 1; }

SERVICES_UP=1
# services.sh runs PostgreSQL as an unprivileged user when we are root: it must be able to
# reach its cluster under $WORK/svc (services.sh opens that directory itself).
chmod o+x "$WORK"
"$ROOT/scripts/services.sh" start "$WORK/svc"
command -v psql >/dev/null 2>&1 || { echo "multinode: psql is missing" >&2; exit 1; }
# shellcheck disable=SC1091
source "$WORK/svc/services.env"

# The driver runs in the background so that the traps above run at once on a signal.
MULTINODE_WHARF_BIN=$BIN MULTINODE_WORK=$WORK python3 -u "$ROOT/scripts/lib/multinode.py" &
DRIVER_PID=$!
set +e
wait "$DRIVER_PID"
rc=$?
set -e
DRIVER_PID=
exit "$rc"
