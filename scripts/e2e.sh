#!/usr/bin/env bash
# End-to-end tests with real clients: the pytest project in tests/e2e/ (see its README.md).
# This runner installs what the suite needs, builds Wharf, and runs pytest.
#
# Usage: scripts/e2e.sh [pytest arguments...]     e.g. scripts/e2e.sh -k tls -x
#
# Environment:
#   E2E_REGISTRY=wharf         (default) every test, against fresh Wharf servers
#   E2E_REGISTRY=distribution  only the client-only tests (marked `interop`), against CNCF
#                              Distribution (`docker-registry`, Debian package), as a reference
#                              peer that validates the tests themselves
#   E2E_WHARF_BIN=path         use this wharf binary instead of building `cargo build -p wharf`
#   E2E_CMD_TIMEOUT=secs       timeout for every client command (default 60)
#   E2E_KEEP=1                 keep the work directory (server logs, client storage) after the run
#   E2E_NO_INSTALL=1           install nothing: the tools and tests/e2e/.venv must be there
#   E2E_INSTALL_ONLY=1         install the tools and tests/e2e/.venv, then stop (.ci/run does
#                              this in the background while it builds)
#
# On Debian, missing tools are installed with apt-get (as root or via sudo), and the Python
# packages pinned in tests/e2e/requirements.txt into the virtual environment tests/e2e/.venv
# (made here, reused while requirements.txt is unchanged). A missing tool is an error: the
# suite never skips. The exit status is pytest's.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E=$ROOT/tests/e2e
VENV=$E2E/.venv
MODE=${E2E_REGISTRY:-wharf}

case $MODE in
  wharf | distribution) ;;
  *) echo "e2e: unknown E2E_REGISTRY=$MODE (want wharf or distribution)" >&2; exit 2 ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wharf-e2e.XXXXXX")
cleanup() {
  local rc=$?
  set +e
  # buildah/podman with the vfs driver leave no mounts, but never rm -rf across one.
  awk -v w="$WORK" 'index($2, w) == 1 { print $2 }' /proc/self/mounts 2>/dev/null |
    sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  if [[ ${E2E_KEEP:-0} == 1 ]]; then
    echo "e2e: work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "e2e: need root (or sudo) to run: $*" >&2; return 1
  fi
}

# Debian packages: the clients and Python (python3-venv too, if venv needs it: ensure_venv).
ensure_packages() {
  local -a pkgs=()
  local pair
  for pair in skopeo:skopeo podman:podman buildah:buildah umoci:umoci curl:curl tar:tar \
    gzip:gzip openssl:openssl python3:python3; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || pkgs+=("${pair#*:}")
  done
  if [[ $MODE == distribution ]] && ! command -v docker-registry >/dev/null 2>&1; then
    pkgs+=(docker-registry)
  fi
  apt_install "${pkgs[@]}"
}

apt_install() {
  (($#)) || return 0
  local -a pkgs=("$@")
  if [[ ${E2E_NO_INSTALL:-0} == 1 ]]; then
    echo "e2e: missing ${pkgs[*]} (E2E_NO_INSTALL=1)" >&2
    exit 1
  fi
  echo "e2e: installing ${pkgs[*]} (apt-get)"
  if ! { as_root apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"; } \
    >"$WORK/apt.log" 2>&1; then
    tail -n 30 "$WORK/apt.log" >&2
    echo "e2e: apt-get install failed" >&2
    exit 1
  fi
}

# The virtual environment with the pinned packages; rebuilt when requirements.txt changes.
ensure_venv() {
  local want stamp=$VENV/.requirements.sha256
  want=$(sha256sum "$E2E/requirements.txt" | cut -d' ' -f1)
  if [[ -x $VENV/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    return 0
  fi
  if [[ ${E2E_NO_INSTALL:-0} == 1 ]]; then
    echo "e2e: $VENV is missing or out of date with requirements.txt (E2E_NO_INSTALL=1)" >&2
    exit 1
  fi
  echo "e2e: creating $VENV (pip install -r tests/e2e/requirements.txt)"
  rm -rf "$VENV"
  # Debian ships venv's pip bootstrap (ensurepip) apart, in python3-venv.
  if ! python3 -m venv "$VENV" >"$WORK/venv.log" 2>&1; then
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$E2E/requirements.txt" >"$WORK/pip.log" 2>&1; then
    tail -n 30 "$WORK/pip.log" >&2
    echo "e2e: pip install failed" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
}

ensure_packages
ensure_venv
if [[ ${E2E_INSTALL_ONLY:-0} == 1 ]]; then
  echo "e2e: tools and $VENV installed (E2E_INSTALL_ONLY=1)"
  exit 0
fi

if [[ $MODE == wharf && -z ${E2E_WHARF_BIN:-} ]]; then
  if ! command -v cargo >/dev/null 2>&1; then
    echo "e2e: cargo not found (or set E2E_WHARF_BIN)" >&2
    exit 1
  fi
  echo "e2e: cargo build -p wharf"
  (cd "$ROOT" && cargo build -p wharf)
  export E2E_WHARF_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/wharf
fi
export E2E_REGISTRY=$MODE

cd "$ROOT"
# -p no:cacheprovider: nothing written into the checkout besides the venv.
"$VENV/bin/python" -m pytest -c "$E2E/pytest.ini" --rootdir "$E2E" -p no:cacheprovider \
  --basetemp "$WORK/pytest" -v "$E2E" "$@"
