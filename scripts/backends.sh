#!/usr/bin/env bash
# Runs Wharf on its other backends: starts PostgreSQL, moto (S3) and Azurite (Azure Blob) on
# loopback (scripts/services.sh), then runs the metadata contract suite on SQLite and
# PostgreSQL, the blob-store contract suite on the filesystem, S3 and Azure, and the
# integration tests (OCI behaviours, webhooks, ...) with PostgreSQL + S3, then with blobs on
# Azure. Fails (non-zero) if a service cannot start or any test fails; prints what ran. Also
# the object_faults test: S3 behind a proxy that fails every request (503 to the client,
# nothing acknowledged).
#
# Usage: scripts/backends.sh            (extra arguments are passed to every cargo test)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wharf-backends.XXXXXX")
cleanup() {
  local rc=$?
  set +e
  "$ROOT/scripts/services.sh" stop "$WORK"
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM

"$ROOT/scripts/services.sh" start "$WORK"
# shellcheck disable=SC1091
source "$WORK/services.env"
export WHARF_TEST_BUCKET=$SERVICES_BUCKET
RUN=$(date +%s)-$$
declare -a RAN=()

# Every cargo run names its test targets with --workspace rather than -p: with -p, cargo
# resolves the dependencies' features for that package alone, which differ from the
# workspace's, and rebuilds half the dependency tree (twice: once per package) instead of
# reusing the build of `cargo test --workspace` (about 5 of CI's minutes). The integration
# tests are one binary (`it`) with one module per area: a filter `oci::` runs that area's
# tests (a filter matches any part of a test's path, hence the --skip of safe_webhooks).
step() { # name, command...
  local name=$1
  shift
  echo "== backends: $name" >&2
  "$@"
  RAN+=("$name")
}

step "metadata contract suite on SQLite and PostgreSQL (garbage collection also over S3)" \
  env WHARF_TEST_POSTGRES=1 WHARF_TEST_S3=1 cargo test --workspace --test meta_contract "$@"
step "blob-store contract suite on filesystem, S3 (moto) and Azure Blob (Azurite)" \
  env WHARF_TEST_S3=1 WHARF_TEST_AZURE=1 \
  cargo test --workspace --test blob_contract "$@" -- --nocapture
step "integration tests on PostgreSQL + S3 (moto); S3 failing (503) through a proxy" \
  env WHARF_TEST_S3=1 WHARF_TEST_BLOB_STORE="s3://$SERVICES_BUCKET/it-$RUN" \
  WHARF_TEST_DATABASE=postgres \
  cargo test --workspace --test it "$@" -- oci:: webhooks:: object_faults:: locks:: \
  quarantine:: retention:: auth:: acr:: nodes:: --skip safe_webhooks::
step "garbage-collection integration tests on PostgreSQL (blobs in the data directory: they inspect the files)" \
  env WHARF_TEST_DATABASE=postgres cargo test --workspace --test it "$@" -- gc::
step "oci + webhooks integration tests, blobs on Azure Blob (Azurite)" \
  env WHARF_TEST_BLOB_STORE="azure://$SERVICES_BUCKET/it-$RUN" \
  cargo test --workspace --test it "$@" -- oci:: webhooks:: --skip safe_webhooks::

echo "backends: all passed:" >&2
for r in "${RAN[@]}"; do echo "  - $r" >&2; done
