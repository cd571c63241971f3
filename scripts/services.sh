#!/usr/bin/env bash
# Object-storage services for tests, on loopback: moto in server mode (S3) and Azurite (Azure
# Blob). Both are pinned and installed under the repository (.services/, git-ignored): moto in a
# Python virtual environment from PyPI, Azurite from npm.
#
# Usage:
#   scripts/services.sh install        install the pinned services (reused while the pins hold)
#   scripts/services.sh start DIR      start both with their data in DIR; write DIR/services.env
#                                      (the variables the tests read: source it) and DIR/pids
#   scripts/services.sh stop DIR       stop the services started in DIR
#
# `start` fails (non-zero) if a service cannot be installed or does not answer in time. It
# creates the bucket and the container named by SERVICES_BUCKET (default wharf-test).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SVC=$ROOT/.services
VENV=$SVC/venv
MOTO_VERSION=5.2.5
BOTO3_VERSION=1.44.5
AZURE_BLOB_VERSION=12.31.1
AZURITE_VERSION=3.37.0
BUCKET=${SERVICES_BUCKET:-wharf-test}
# Azurite's documented development account: public, not a secret.
AZ_ACCOUNT=devstoreaccount1
AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

log() { echo "services: $*" >&2; }

install() {
  mkdir -p "$SVC"
  local pins="moto[server]==$MOTO_VERSION boto3==$BOTO3_VERSION azure-storage-blob==$AZURE_BLOB_VERSION"
  if [[ ! -x $VENV/bin/moto_server || "$(cat "$VENV/.pins" 2>/dev/null)" != "$pins" ]]; then
    log "installing $pins into $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >"$SVC/venv.log" 2>&1; then
      # Debian ships venv's pip bootstrap apart, in python3-venv.
      apt-get install -y -qq python3-venv >>"$SVC/venv.log" 2>&1 || true
      python3 -m venv "$VENV" >>"$SVC/venv.log" 2>&1 || { cat "$SVC/venv.log" >&2; return 1; }
    fi
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install -q --disable-pip-version-check $pins >>"$SVC/venv.log" 2>&1 ||
      { tail -20 "$SVC/venv.log" >&2; return 1; }
    echo "$pins" >"$VENV/.pins"
  fi
  if [[ ! -x $SVC/azurite/node_modules/.bin/azurite-blob ||
    "$(cat "$SVC/azurite/.pin" 2>/dev/null)" != "$AZURITE_VERSION" ]]; then
    command -v npm >/dev/null || { log "npm is missing (apt-get install npm)"; return 1; }
    log "installing azurite@$AZURITE_VERSION into $SVC/azurite"
    rm -rf "$SVC/azurite"
    mkdir -p "$SVC/azurite"
    npm install --prefix "$SVC/azurite" --no-audit --no-fund --silent \
      "azurite@$AZURITE_VERSION" >"$SVC/npm.log" 2>&1 || { tail -20 "$SVC/npm.log" >&2; return 1; }
    echo "$AZURITE_VERSION" >"$SVC/azurite/.pin"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # name port pid
  local i
  for i in $(seq 1 300); do
    if ! kill -0 "$3" 2>/dev/null; then
      log "$1 exited before it answered"
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  log "$1 did not answer on 127.0.0.1:$2 within 60 s"
  return 1
}

start() {
  local dir=$1
  mkdir -p "$dir"
  install
  local s3_port az_port
  s3_port=$(free_port)
  az_port=$(free_port)
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$dir/moto.log" 2>&1 &
  echo $! >>"$dir/pids"
  wait_port moto "$s3_port" $! || { tail -20 "$dir/moto.log" >&2; return 1; }
  mkdir -p "$dir/azurite"
  "$SVC/azurite/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$az_port" \
    --location "$dir/azurite" --skipApiVersionCheck --silent >"$dir/azurite.log" 2>&1 &
  echo $! >>"$dir/pids"
  wait_port azurite "$az_port" $! || { tail -20 "$dir/azurite.log" >&2; return 1; }
  local cs="DefaultEndpointsProtocol=http;AccountName=$AZ_ACCOUNT;AccountKey=$AZ_KEY;BlobEndpoint=http://127.0.0.1:$az_port/$AZ_ACCOUNT;"
  cat >"$dir/services.env" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1
export AZURE_STORAGE_CONNECTION_STRING='$cs'
export SERVICES_BUCKET=$BUCKET
ENV
  # The bucket and the container: Wharf expects them to exist, as in production.
  # shellcheck disable=SC1091
  (source "$dir/services.env" && "$VENV/bin/python" - "$BUCKET" <<'PY') || return 1
import os, sys
import boto3
from azure.storage.blob import BlobServiceClient
name = sys.argv[1]
boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
BlobServiceClient.from_connection_string(
    os.environ["AZURE_STORAGE_CONNECTION_STRING"]
).create_container(name)
PY
  log "moto (S3) on 127.0.0.1:$s3_port, Azurite (Azure Blob) on 127.0.0.1:$az_port; bucket and container $BUCKET; env in $dir/services.env"
}

stop() {
  local dir=$1 pid
  [[ -f $dir/pids ]] || return 0
  while read -r pid; do
    kill "$pid" 2>/dev/null || true
  done <"$dir/pids"
  while read -r pid; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done <"$dir/pids"
  rm -f "$dir/pids"
}

case ${1:-} in
  install) install ;;
  start) [[ -n ${2:-} ]] || { echo "usage: $0 start DIR" >&2; exit 2; }; start "$2" ;;
  stop) [[ -n ${2:-} ]] || { echo "usage: $0 stop DIR" >&2; exit 2; }; stop "$2" ;;
  *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
