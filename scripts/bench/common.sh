# Helpers shared by the scripts in scripts/bench/ (source it; it sets no options).
#
# Expects DIST_BIN (path of Distribution's binary) to be set before
# install_distribution is called.

log() { printf '== %s\n' "$*" >&2; }

# Installs CNCF Distribution (Debian package docker-registry) if DIST_BIN is
# missing.
install_distribution() {
    [[ -x $DIST_BIN ]] && return 0
    # Another apt/dpkg may already be installing packages (possibly this very
    # one): starting a second one would just fail on the dpkg lock, so wait.
    while pgrep -x apt >/dev/null || pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null; do
        log "waiting for a running apt/dpkg to finish"
        sleep 5
    done
    [[ -x $DIST_BIN ]] && return 0
    if [[ $(id -u) != 0 ]]; then
        echo "$DIST_BIN missing; install the docker-registry package as root" >&2
        exit 1
    fi
    log "installing docker-registry (CNCF Distribution)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints the first port from $1 up that nothing listens on.
free_port() {
    local p=$1
    while port_in_use "$p"; do p=$((p + 1)); done
    echo "$p"
}

# Waits (at most 30 s) until http://127.0.0.1:PORT/v2/ answers; on failure
# prints the log and exits.
wait_v2() { # name pid port logfile
    local name=$1 pid=$2 port=$3 logfile=$4 i
    for i in $(seq 1 300); do
        if curl -fs -o /dev/null "http://127.0.0.1:$port/v2/"; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited during startup; log:" >&2
            cat "$logfile" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "$name did not answer /v2/ within 30 s; log:" >&2
    cat "$logfile" >&2
    exit 1
}

# Prints the Distribution config both benchmarks use: local filesystem storage under $1,
# deletes allowed, only the default in-memory blob descriptor cache, quiet logs (no access
# log), no background upload purging that could run mid-measurement, listening on
# 127.0.0.1:$2. Callers append their own sections (e.g. notifications).
distribution_config() { # rootdir port
    cat <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $1
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$2
EOF
}
