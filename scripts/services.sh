#!/usr/bin/env bash
# Services for tests, on loopback: PostgreSQL (Debian's package), moto in server mode (S3) and
# Azurite (Azure Blob). moto and Azurite are pinned and installed under the repository
# (.services/, git-ignored): moto in a Python virtual environment from PyPI, Azurite from npm.
# PostgreSQL is installed with apt-get if missing, and runs as an unprivileged user (initdb
# refuses root) over a cluster made in DIR.
#
# Usage:
#   scripts/services.sh install        install the pinned services (reused while the pins hold)
#   scripts/services.sh start DIR      start both with their data in DIR; write DIR/services.env
#                                      (the variables the tests read: source it) and DIR/pids
#   scripts/services.sh stop DIR       stop the services started in DIR
#
# `start` fails (non-zero) if a service cannot be installed or does not answer in time. It
# creates the bucket and the container named by SERVICES_BUCKET (default wharf-test), and
# exports WHARF_TEST_POSTGRES_URL (a superuser on the cluster's `postgres` database: tests make
# a database of their own each).
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

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [[ -n $d && -x $d/postgres ]] && echo "$d"
}

install() {
  mkdir -p "$SVC"
  if [[ -z $(pg_bin) ]] || ! command -v openssl >/dev/null; then
    log "installing postgresql and openssl (Debian)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql openssl; } \
      >"$SVC/apt.log" 2>&1 || { tail -20 "$SVC/apt.log" >&2; return 1; }
  fi
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
  local s3_port az_port pg_port
  s3_port=$(free_port)
  az_port=$(free_port)
  pg_port=$(free_port)
  start_postgres "$dir" "$pg_port"
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
export WHARF_TEST_POSTGRES_URL=postgres://wharf@127.0.0.1:$pg_port/postgres
export WHARF_TEST_POSTGRES_DATA=$dir/pg/data
export WHARF_TEST_POSTGRES_START=$dir/pg/start.sh
export WHARF_TEST_POSTGRES_CA=$dir/pg/tls/ca.pem
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
  log "PostgreSQL on 127.0.0.1:$pg_port, moto (S3) on 127.0.0.1:$s3_port, Azurite (Azure Blob) on 127.0.0.1:$az_port; bucket and container $BUCKET; env in $dir/services.env"
}

# A throwaway cluster: trust authentication on loopback only, fsync on (the fault suite runs
# on it), owned by a user that is not root when the script runs as root.
start_postgres() { # dir port
  local dir=$1 port=$2 bin user=()
  bin=$(pg_bin) || { log "postgresql is not installed"; return 1; }
  mkdir -p "$dir/pg"
  if [[ $(id -u) == 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown -R postgres "$dir/pg"
    chmod o+x "$dir"
    user=(runuser -u postgres --)
  fi
  "${user[@]}" "$bin/initdb" -D "$dir/pg/data" -U wharf --auth=trust -E UTF8 --locale=C.UTF-8 \
    >"$dir/pg/initdb.log" 2>&1 || { tail -20 "$dir/pg/initdb.log" >&2; return 1; }
  # TLS on (clients choose it with sslmode=): a throwaway CA and a certificate for 127.0.0.1
  # that it signed, so a test can verify the server (sslmode=verify-full, sslrootcert=ca.pem).
  local tls=$dir/pg/tls
  mkdir -p "$tls"
  {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
      -subj /CN=wharf-test-ca -keyout "$tls/ca.key" -out "$tls/ca.pem" &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
        -keyout "$tls/server.key" -out "$tls/server.csr" &&
      printf '%s\n' subjectAltName=IP:127.0.0.1 basicConstraints=CA:FALSE \
        keyUsage=digitalSignature extendedKeyUsage=serverAuth >"$tls/server.ext" &&
      openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 7 -extfile "$tls/server.ext" -out "$tls/server.pem"
  } >"$dir/pg/tls.log" 2>&1 || { tail -20 "$dir/pg/tls.log" >&2; return 1; }
  chmod 600 "$tls/server.key"
  if [[ $(id -u) == 0 ]]; then chown -R postgres "$tls"; fi
  # The start command, kept for the fault suite, which kills the server and starts it again.
  printf '%q ' "${user[@]}" "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/postgres.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir/pg -c max_connections=300 -c shared_buffers=128MB -c ssl=on -c ssl_cert_file=$tls/server.pem -c ssl_key_file=$tls/server.key" \
    start >"$dir/pg/start.sh"
  bash "$dir/pg/start.sh" >/dev/null || { tail -20 "$dir/pg/postgres.log" >&2; return 1; }
  echo "pg:$bin:$dir/pg/data" >>"$dir/pids"
}

stop() {
  local dir=$1 pid
  [[ -f $dir/pids ]] || return 0
  while read -r pid; do
    if [[ $pid == pg:* ]]; then
      IFS=: read -r _ bin data <<<"$pid"
      if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
      else
        "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
      fi
      continue
    fi
    kill "$pid" 2>/dev/null || true
  done <"$dir/pids"
  while read -r pid; do
    [[ $pid == pg:* ]] && continue
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
