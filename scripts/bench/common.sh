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
