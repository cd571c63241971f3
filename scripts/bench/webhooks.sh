#!/usr/bin/env bash
# Benchmarks Wharf's webhook delivery against the targets of the webhook issue
# (its "Performance and durability" table), with CNCF Distribution's
# notifications measured beside Wharf's latency.
#
# Builds wharf and wharf-bench, installs Distribution (Debian package
# docker-registry) if missing, then runs `wharf-bench webhooks` scenarios, each
# against a fresh server on loopback with temporary storage:
#   latency     one webhook, PUT sent -> event received, on Wharf and then on
#               Distribution (notification endpoint -> the bench's receiver)
#   throughput  10 webhooks matching every push; deliveries/s and history
#   isolation   10 webhooks, all healthy, then one hanging; p99 ratio
#   crash       the bench runs wharf itself, kill -9s it mid-push, restarts it
#               and checks every acknowledged push was delivered
#   nodes       throughput with 1, 2 and 3 nodes over one PostgreSQL database
#               and one S3 prefix (scripts/services.sh: PostgreSQL, moto), the
#               pushes spread over the nodes in turn (not in the default set)
# and prints the figures beside the targets.
#
# Environment:
#   BENCH_QUICK=1        small fast run (100 manifests per scenario, 30 s waits)
#   BENCH_SCENARIOS=...  subset, default "latency throughput isolation crash"
#   BENCH_ARGS=...       extra arguments for every scenario (e.g. "--concurrency 16")
#   BENCH_SEED=N         content/name seed (default: the clock)
#   BENCH_OUT=FILE       also copy the JSON result lines there
#   BENCH_SKIP_BUILD=1   use already-built binaries
#   BENCH_NO_DIST=1      skip Distribution (and its installation)
#   BENCH_NODES="1 2 3"  node counts of the nodes scenario
#   BENCH_KEEP=1         keep the temporary directory (data and server logs)
#   WHARF_BIN, BENCH_BIN, DIST_BIN   binary overrides
# Exit status: 0 if every scenario ran and lost/missed no event, 1 otherwise
# (a figure that misses its performance target is shown, not an error).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WHARF_BIN=${WHARF_BIN:-$TARGET_DIR/release/wharf}
BENCH_BIN=${BENCH_BIN:-$TARGET_DIR/release/wharf-bench}
DIST_BIN=${DIST_BIN:-/usr/bin/docker-registry}
read -r -a SCENARIOS <<<"${BENCH_SCENARIOS:-latency throughput isolation crash}"
SEED=${BENCH_SEED:-$(date +%s)}
# shellcheck source=common.sh
source "$ROOT/scripts/bench/common.sh"

has_scenario() { [[ " ${SCENARIOS[*]} " == *" $1 "* ]]; }
with_dist() { [[ ${BENCH_NO_DIST:-0} != 1 ]] && has_scenario latency; }

# --- build and install -------------------------------------------------------

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "building wharf and wharf-bench (release)"
    (cd "$ROOT" && cargo build --release -p wharf -p wharf-bench)
fi
if with_dist; then install_distribution; fi

# --- servers -----------------------------------------------------------------

WORK=$(mktemp -d -t wharf-webhooks.XXXXXX)
SERVER_PID=
NODE_PIDS=()

stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

stop_nodes() {
    local p
    for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${NODE_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    NODE_PIDS=()
}

cleanup() {
    stop_server
    stop_nodes
    if [[ -d $WORK/services ]]; then "$ROOT/scripts/services.sh" stop "$WORK/services"; fi
    # The crash scenario's server is the bench's child; if the bench died
    # first, it is still running.
    if [[ -s $WORK/crash.pid ]]; then
        kill -9 "$(cat "$WORK/crash.pid")" 2>/dev/null || true
    fi
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a fresh Wharf (own data directory) and sets SERVER_PID and PORT.
start_wharf() { # name
    PORT=$(free_port 15400)
    mkdir -p "$WORK/$1"
    WHARF_LOG=${WHARF_LOG:-warn} "$WHARF_BIN" serve \
        --listen "127.0.0.1:$PORT" --data-dir "$WORK/$1" >"$WORK/$1.log" 2>&1 &
    SERVER_PID=$!
    wait_v2 "wharf ($1)" "$SERVER_PID" "$PORT" "$WORK/$1.log"
}

# Starts Distribution with a notification endpoint at the bench's receiver
# (127.0.0.1:$RECEIVER_PORT); sets SERVER_PID and PORT.
start_distribution() {
    PORT=$(free_port 15500)
    mkdir -p "$WORK/distribution"
    # Storage settings as in registry.sh. The endpoint's timeout matches
    # Wharf's per-attempt timeout; threshold/backoff are Distribution's
    # documented example values.
    {
        distribution_config "$WORK/distribution" "$PORT"
        cat <<EOF
notifications:
  endpoints:
    - name: wharfbench
      url: http://127.0.0.1:$RECEIVER_PORT/distribution
      timeout: 5s
      threshold: 5
      backoff: 1s
EOF
    } >"$WORK/distribution.yml"
    "$DIST_BIN" serve "$WORK/distribution.yml" >"$WORK/distribution.log" 2>&1 &
    SERVER_PID=$!
    wait_v2 distribution "$SERVER_PID" "$PORT" "$WORK/distribution.log"
}

# --- load --------------------------------------------------------------------

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    LAT_N=100 THR_N=100 ISO_N=100 CRASH_N=100 KILL_AFTER=40 WAIT=30 CRASH_WAIT=90
else
    # Isolation pushes 2,000 manifests: with 500 each phase lasted under a second, and
    # its p99 (the backlog at the run's end, as ten webhooks per push outrun delivery)
    # moved 3x between runs of the same binary, swamping the ratio it is meant to show.
    LAT_N=500 THR_N=2000 ISO_N=2000 CRASH_N=1000 KILL_AFTER=400 WAIT=60 CRASH_WAIT=120
fi
read -r -a EXTRA <<<"${BENCH_ARGS:-}"

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
log "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); seed $SEED"
if with_dist; then log "distribution: $("$DIST_BIN" --version 2>&1 | head -n1)"; fi

failed=0
bench() { # scenario label args...
    local scenario=$1 label=$2
    shift 2
    # Flush the previous run's writes so their writeback does not land in
    # this measurement.
    sync
    log "$scenario on $label"
    if ! "$BENCH_BIN" webhooks "$scenario" --label "$label" --seed "$SEED" "$@" "${EXTRA[@]}" \
        >>"$RESULTS"; then
        log "$scenario on $label reported errors (see above)"
        failed=1
    fi
}

# Checks the server survived its scenario, then stops it.
finish() { # name
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "$1 died during its scenario; log:" >&2
        tail -n 50 "$WORK/$1.log" >&2
        SERVER_PID=
        failed=1
        return
    fi
    stop_server
}

if has_scenario latency; then
    start_wharf wharf-latency
    bench latency wharf --registry "http://127.0.0.1:$PORT" --manifests "$LAT_N" --wait-secs "$WAIT"
    finish wharf-latency
    if with_dist; then
        RECEIVER_PORT=$(free_port 15600)
        start_distribution
        bench latency distribution --flavor distribution --receiver "127.0.0.1:$RECEIVER_PORT" \
            --registry "http://127.0.0.1:$PORT" --manifests "$LAT_N" --wait-secs "$WAIT"
        finish distribution
    fi
fi

if has_scenario throughput; then
    start_wharf wharf-throughput
    bench throughput wharf --registry "http://127.0.0.1:$PORT" --manifests "$THR_N" \
        --webhooks 10 --wait-secs "$((WAIT * 2))"
    finish wharf-throughput
fi

if has_scenario isolation; then
    start_wharf wharf-isolation
    bench isolation wharf --registry "http://127.0.0.1:$PORT" --manifests "$ISO_N" \
        --webhooks 10 --wait-secs "$WAIT"
    finish wharf-isolation
fi

if has_scenario crash; then
    # The bench starts, kills and restarts this server itself.
    WHARF_LOG=${WHARF_LOG:-warn} bench crash wharf --wharf-bin "$WHARF_BIN" \
        --data-dir "$WORK/wharf-crash" --server-log "$WORK/wharf-crash.log" \
        --pid-file "$WORK/crash.pid" --manifests "$CRASH_N" --kill-after "$KILL_AFTER" \
        --wait-secs "$CRASH_WAIT"
fi

if has_scenario nodes; then
    chmod o+x "$WORK" # PostgreSQL runs as its own user
    "$ROOT/scripts/services.sh" start "$WORK/services" >&2
    # shellcheck disable=SC1091
    source "$WORK/services/services.env"
    for n in ${BENCH_NODES:-1 2 3}; do
        db="bench_nodes_${n}_$SEED"
        psql -q -X "$WHARF_TEST_POSTGRES_URL" -c "CREATE DATABASE $db" >&2
        urls=()
        for i in $(seq 1 "$n"); do
            p=$(free_port $((15700 + 10 * n + i)))
            mkdir -p "$WORK/nodes-$n-$i"
            WHARF_LOG=${WHARF_LOG:-warn} WHARF_SECRET_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8= \
                "$WHARF_BIN" serve --listen "127.0.0.1:$p" --data-dir "$WORK/nodes-$n-$i" \
                --database "${WHARF_TEST_POSTGRES_URL%/*}/$db?sslmode=disable" \
                --blob-store "s3://$SERVICES_BUCKET/nodes-$n-$SEED" --node-id "n$i" \
                >"$WORK/wharf-nodes-$n-$i.log" 2>&1 &
            NODE_PIDS+=($!)
            wait_v2 "wharf node $i of $n" "$!" "$p" "$WORK/wharf-nodes-$n-$i.log"
            urls+=("http://127.0.0.1:$p")
        done
        # Where the cores go (nodes, PostgreSQL, moto, the bench): whether a second node
        # has any left to use.
        cpu_snapshot "$WORK/cpu-$n.before"
        bench throughput "wharf-pg-${n}node" --registry "$(IFS=,; echo "${urls[*]}")" \
            --manifests "$THR_N" --webhooks 10 --wait-secs "$((WAIT * 2))"
        cpu_snapshot "$WORK/cpu-$n.after"
        cpu_report "$WORK/cpu-$n.before" "$WORK/cpu-$n.after" "$n node(s)" 2>&1 |
            tee -a "$WORK/cpu.txt" >&2
        stop_nodes
    done
fi

# --- report ------------------------------------------------------------------

if [[ -n ${BENCH_OUT:-} ]]; then cp "$RESULTS" "$BENCH_OUT"; fi
for f in "$WORK"/wharf-*.log; do
    [[ -s $f ]] || continue
    if grep -q -E ' (ERROR|WARN) ' "$f"; then
        log "$(basename "$f"): $(grep -c -E ' (ERROR|WARN) ' "$f") warning/error lines, e.g.:"
        grep -E ' (ERROR|WARN) ' "$f" | head -n 3 >&2
    fi
done
echo
"$BENCH_BIN" webhooks report --label wharf --compare distribution "$RESULTS"
if has_scenario nodes; then
    cat "$WORK/cpu.txt"
    for n in ${BENCH_NODES:-1 2 3}; do
        "$BENCH_BIN" webhooks report --label "wharf-pg-${n}node" "$RESULTS" || true
    done
fi
if ((failed)); then
    echo
    echo "SOME SCENARIOS HAD ERRORS (missing/lost events, failed PUTs or history mismatch): see above" >&2
fi
exit "$failed"
