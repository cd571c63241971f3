#!/usr/bin/env bash
# Fault-injection suite (issue 9, item 2): disk full on a tmpfs, I/O errors injected with
# strace, and kill -9 at each durable step, each followed by the same invariant checks
# (acknowledged writes readable, no event for an uncommitted change, every acknowledged
# change's event delivered, no orphan upload file, the server serves again). The scenarios
# and the checks live in scripts/lib/faults.py; this script provides the machine: root,
# tools, the binary, a scratch directory, and a cleanup that leaves no process or mount.
#
# Usage: scripts/faults.sh
#
# Environment:
#   FAULTS_WHARF_BIN=path   use this wharf binary (CI: target/debug/wharf) and skip the build;
#                           otherwise `cargo build -p wharf` (debug, as CI's tests build it)
#   FAULTS_ONLY=regex       run only the scenarios whose name matches
#   FAULTS_EVENT_WAIT=secs  how long to wait for expected webhook events (default 15)
#   FAULTS_KEEP=1           keep the work directory (server logs, strace output)
#   FAULTS_VERBOSE=1        print the strace commands and Python tracebacks
#   FAULTS_NO_INSTALL=1     do not try to install missing tools
#   FAULTS_DATABASE=postgres  run with the metadata in PostgreSQL (started by
#                           scripts/services.sh): the scenarios that do not inject into
#                           SQLite's files, plus PostgreSQL killed -9 and stopped under load
#
# Needs root: mount(8) for the tmpfs, and ptrace of the server for strace -p.
# Output: one PASS/FAIL line per scenario, the faults injected by kind and step,
# `invariant violations: N`, and finally `faults: N passed, M failed`. Exit status is
# non-zero on any failed scenario or violation.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ $EUID -ne 0 ]]; then
  echo "faults: must run as root (tmpfs mounts, strace -p)" >&2
  exit 2
fi

# The scratch directory must be on a real disk: the strace scenarios' data directories live
# there, and each disk-full scenario mounts its own tmpfs below it.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wharf-faults.XXXXXX")
DRIVER_PID=

cleanup() {
  local rc=$?
  set +e
  # The driver undoes its own work on SIGTERM; give it a moment, then make sure.
  if [[ -n $DRIVER_PID ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    kill "$DRIVER_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DRIVER_PID" 2>/dev/null
    wait "$DRIVER_PID" 2>/dev/null
  fi
  # Every server and strace the driver started is listed in $WORK/pids. Kill by id, and only
  # a process whose command line names $WORK (each server's data directory, each strace's
  # output file is there): an id reused by another process is left alone.
  if [[ -f $WORK/pids ]]; then
    local pid
    while read -r pid; do
      [[ -n $pid && -r /proc/$pid/cmdline ]] || continue
      if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$WORK"; then
        kill -9 "$pid" 2>/dev/null
      fi
    done <"$WORK/pids"
  fi
  # Unmount every tmpfs under the work directory, deepest first, before removing it.
  awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/self/mounts 2>/dev/null |
    sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
  [[ -d $WORK/services ]] && "$ROOT/scripts/services.sh" stop "$WORK/services"
  if [[ ${FAULTS_KEEP:-0} == 1 ]]; then
    echo "faults: work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "faults: interrupted" >&2; exit 130' INT
trap 'echo "faults: terminated" >&2; exit 143' TERM

# ---------------------------------------------------------------------------
# dependencies (Debian): apt-get update once, then install what is missing
# (the same pattern as scripts/e2e.sh)
# ---------------------------------------------------------------------------
ensure_deps() {
  local -a pkgs=()
  local pair
  # On bookworm mount(8)/umount(8) come from the `mount` package (split out of util-linux).
  for pair in strace:strace mount:mount umount:mount python3:python3 timeout:coreutils; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || pkgs+=("${pair#*:}")
  done
  if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import sqlite3' >/dev/null 2>&1; then
    pkgs+=(libpython3-stdlib)
  fi
  if ((${#pkgs[@]})) && [[ ${FAULTS_NO_INSTALL:-0} != 1 ]]; then
    mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
    echo "faults: installing ${pkgs[*]} (apt-get)"
    if ! { apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"; } \
      >"$WORK/apt.log" 2>&1; then
      tail -n 30 "$WORK/apt.log" >&2
      echo "faults: apt-get install failed" >&2
      exit 1
    fi
  fi
  local missing=()
  for pair in strace mount umount python3; do
    command -v "$pair" >/dev/null 2>&1 || missing+=("$pair")
  done
  if ((${#missing[@]})); then
    echo "faults: missing tools: ${missing[*]}" >&2
    exit 1
  fi
}

ensure_deps

if [[ -n ${FAULTS_WHARF_BIN:-} ]]; then
  BIN=$FAULTS_WHARF_BIN
else
  echo "faults: cargo build -p wharf"
  (cd "$ROOT" && cargo build -q -p wharf)
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/wharf
fi
[[ -x $BIN ]] || { echo "faults: no wharf binary at $BIN" >&2; exit 1; }

if [[ ${FAULTS_DATABASE:-} == postgres ]]; then
  chmod o+x "$WORK" # PostgreSQL runs as its own user and needs to reach its cluster
  "$ROOT/scripts/services.sh" start "$WORK/services" >/dev/null
  # shellcheck disable=SC1091
  source "$WORK/services/services.env"
  export FAULTS_POSTGRES_URL=$WHARF_TEST_POSTGRES_URL
  export FAULTS_POSTGRES_DATA=$WHARF_TEST_POSTGRES_DATA
  export FAULTS_POSTGRES_START=$WHARF_TEST_POSTGRES_START
fi

# Run the driver in the background and wait, so that the traps above run at once on a signal
# (bash defers traps until a foreground child exits).
FAULTS_WHARF_BIN=$BIN FAULTS_WORK=$WORK python3 -u "$ROOT/scripts/lib/faults.py" &
DRIVER_PID=$!
set +e
wait "$DRIVER_PID"
rc=$?
set -e
DRIVER_PID=
exit "$rc"
