# Helpers shared by the scripts in scripts/bench/ (source it; it sets no options).
#
# Expects DIST_BIN (path of Distribution's binary) to be set before
# install_distribution is called.

log() { printf '== %s\n' "$*" >&2; }

# Installs Debian package PKG unless FILE is executable already.
apt_install() { # file pkg what
    [[ -x $1 ]] && return 0
    # Another apt/dpkg may already be installing packages (possibly this very
    # one): starting a second one would just fail on the dpkg lock, so wait.
    while pgrep -x apt >/dev/null || pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null; do
        log "waiting for a running apt/dpkg to finish"
        sleep 5
    done
    [[ -x $1 ]] && return 0
    if [[ $(id -u) != 0 ]]; then
        echo "$1 missing; install the $2 package as root" >&2
        exit 1
    fi
    log "installing $2 ($3)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# Installs CNCF Distribution (Debian package docker-registry) if DIST_BIN is
# missing.
install_distribution() {
    apt_install "$DIST_BIN" docker-registry "CNCF Distribution"
}

# Prints an htpasswd line with a bcrypt hash (the only kind Distribution's
# htpasswd auth accepts), from apache2-utils' htpasswd or Python's bcrypt,
# installing apache2-utils when neither is there. Cost 5, htpasswd's default,
# which is what a registry set up by Docker's documentation uses.
htpasswd_line() { # user password
    if ! command -v htpasswd >/dev/null && ! python3 -c 'import bcrypt' 2>/dev/null; then
        apt_install /usr/bin/htpasswd apache2-utils "htpasswd, for bcrypt entries"
    fi
    if command -v htpasswd >/dev/null; then
        # -b takes the password as an argument; it is a throwaway one.
        htpasswd -Bbn -C 5 "$1" "$2" | head -n1
    else
        python3 -c 'import bcrypt, sys
print(sys.argv[1] + ":" + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(5)).decode())' "$1" "$2"
    fi
}

# Prints a random alphanumeric string of N characters (N <= 40).
random_secret() { # n
    head -c 60 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9' | head -c "$1"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints the first port from $1 up that nothing listens on.
# CPU accounting, to explain a figure from where the cores went: cpu_snapshot FILE records
# the machine's busy and idle time (/proc/stat) and every live process's CPU time
# (/proc/PID/stat utime + stime), in clock ticks; cpu_report BEFORE AFTER LABEL prints the
# difference summed by command name (a process started in between counts whole). Processes
# that exit in between are not seen: what they used is printed as "exited" (the machine's
# busy time not accounted to a live process).
cpu_snapshot() { # file
    {
        awk 'NR == 1 { print "MACHINE", "-", $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat
        cat /proc/[0-9]*/stat 2>/dev/null | awk '{ print $1, $2, $14 + $15 }'
    } >"$1"
}
cpu_report() { # before after label
    local hz
    hz=$(getconf CLK_TCK)
    awk -v hz="$hz" -v label="$3" -v cores="$(nproc)" '
        NR == FNR { b[$1] = $3; bi[$1] = $4; next }
        $1 == "MACHINE" { busy = ($3 - b[$1]) / hz; idle = ($4 - bi[$1]) / hz; next }
        { d = ($3 - b[$1]) / hz; if (d > 0) { t[$2] += d; seen += d } }
        END {
            line = sprintf("cpu during %s: machine %.0f%% busy (%.1f s busy, %.1f s idle, %d cores);", label, 100 * busy / (busy + idle), busy, idle, cores)
            k = 0
            for (c in t) if (t[c] >= 0.05) { n[++k] = c; v[k] = t[c] }
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] > v[i]) { x = v[i]; v[i] = v[j]; v[j] = x; x = n[i]; n[i] = n[j]; n[j] = x }
            for (i = 1; i <= k && i <= 6; i++) line = line sprintf(" %s %.1f s", n[i], v[i])
            if (busy - seen > 0.05) line = line sprintf("; exited %.1f s", busy - seen)
            print line
        }' "$1" "$2" >&2
}

free_port() {
    local p=$1
    while port_in_use "$p"; do p=$((p + 1)); done
    echo "$p"
}

# Waits (at most 30 s) until http://127.0.0.1:PORT/v2/ answers with STATUS
# (default 200; 401 for a registry with auth on, which also proves it is); on
# failure prints the log and exits.
wait_v2() { # name pid port logfile [status]
    local name=$1 pid=$2 port=$3 logfile=$4 want=${5:-200} i code
    for i in $(seq 1 300); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/") || true
        if [[ $code == "$want" ]]; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited during startup; log:" >&2
            cat "$logfile" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "$name did not answer /v2/ with $want within 30 s (last: $code); log:" >&2
    cat "$logfile" >&2
    exit 1
}

# Prints the Distribution config both benchmarks use: local filesystem storage under $1,
# deletes allowed, only the default in-memory blob descriptor cache, quiet logs (no access
# log), no background upload purging that could run mid-measurement, listening on
# 127.0.0.1:$2. Callers append their own sections (e.g. notifications).
distribution_config() { # rootdir port [s3 root]
    local storage
    if [[ ${3:-} == s3 ]]; then
        # Distribution's s3 driver on the same S3 service as Wharf (BENCH_BACKEND=s3): the
        # AWS_* variables of scripts/services.sh, plain http to the loopback endpoint.
        storage="  s3:
    accesskey: $AWS_ACCESS_KEY_ID
    secretkey: $AWS_SECRET_ACCESS_KEY
    region: $AWS_REGION
    regionendpoint: $AWS_ENDPOINT_URL
    bucket: $SERVICES_BUCKET
    rootdirectory: /$4
    secure: false
    v4auth: true"
    else
        storage="  filesystem:
    rootdirectory: $1"
    fi
    cat <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
$storage
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
