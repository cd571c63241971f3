#!/usr/bin/env bash
# Benchmarks Wharf against CNCF Distribution with identical load.
#
# Builds wharf and wharf-bench, installs Distribution (Debian package
# docker-registry) if missing, starts both registries on loopback with
# temporary storage, runs every wharf-bench scenario against each registry in
# turn (scenario X on Distribution, then on Wharf, then scenario Y ...), samples
# each server's RSS, and prints a comparison table.
#
# Environment:
#   BENCH_QUICK=1        small fast run (8 x 1 MiB blobs, 50 manifests, 2 s timed scenarios)
#   BENCH_TARGETS=...    registries to run, default "distribution wharf"
#   BENCH_ARGS=...       extra arguments for every `wharf-bench run` (e.g. "--blobs 64")
#   BENCH_SEED=N         content/repository seed (default: the clock)
#   BENCH_OUT=FILE       also copy the JSON result lines there
#   BENCH_SKIP_BUILD=1   use already-built binaries
#   BENCH_KEEP=1         keep the temporary directory (data and server logs)
#   WHARF_BIN, BENCH_BIN, DIST_BIN   binary overrides
#   WHARF_PORT, DIST_PORT            ports (default: free ports from 15000 up)
# Exit status: 0 if every scenario ran without errors, 1 otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WHARF_BIN=${WHARF_BIN:-$TARGET_DIR/release/wharf}
BENCH_BIN=${BENCH_BIN:-$TARGET_DIR/release/wharf-bench}
DIST_BIN=${DIST_BIN:-/usr/bin/docker-registry}
read -r -a TARGETS <<<"${BENCH_TARGETS:-distribution wharf}"
SEED=${BENCH_SEED:-$(date +%s)}

# shellcheck source=common.sh
source "$ROOT/scripts/bench/common.sh"
has_target() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }

# --- build and install -------------------------------------------------------

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    pkgs=(-p wharf-bench)
    if has_target wharf; then pkgs+=(-p wharf); fi
    log "building ${pkgs[*]} (release)"
    (cd "$ROOT" && cargo build --release "${pkgs[@]}")
fi

if has_target distribution; then install_distribution; fi

# --- servers -----------------------------------------------------------------

WORK=$(mktemp -d -t wharf-bench.XXXXXX)
declare -A PID=() PORT=() POLLER=()

cleanup() {
    local p
    for p in "${POLLER[@]}" "${PID[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PID[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_ready() { # name
    wait_v2 "$1" "${PID[$1]}" "${PORT[$1]}" "$WORK/$1.log"
}

# Keeps the largest VmRSS seen (KiB) in FILE while PID lives. Pure bash so the
# sampler itself costs next to nothing.
poll_rss() { # pid file
    local max=0 k v _
    while [[ -r /proc/$1/status ]]; do
        while read -r k v _; do
            if [[ $k == VmRSS: ]]; then
                if ((v > max)); then
                    max=$v
                    echo "$max" >"$2"
                fi
                break
            fi
        done <"/proc/$1/status" 2>/dev/null || break
        sleep 0.2
    done
}

status_kib() { # pid field
    local k v _
    while read -r k v _; do
        if [[ $k == "$2:" ]]; then
            echo "$v"
            return
        fi
    done <"/proc/$1/status"
    echo 0
}

start_distribution() {
    PORT[distribution]=${DIST_PORT:-$(free_port 15000)}
    mkdir -p "$WORK/distribution"
    # Settings chosen to match Wharf's (see distribution_config in common.sh).
    distribution_config "$WORK/distribution" "${PORT[distribution]}" >"$WORK/distribution.yml"
    "$DIST_BIN" serve "$WORK/distribution.yml" >"$WORK/distribution.log" 2>&1 &
    PID[distribution]=$!
}

start_wharf() {
    PORT[wharf]=${WHARF_PORT:-$(free_port 15100)}
    mkdir -p "$WORK/wharf"
    # Warn-level logs, like Distribution's config above (no per-request log).
    WHARF_LOG=${WHARF_LOG:-warn} RUST_LOG=${RUST_LOG:-warn} "$WHARF_BIN" serve \
        --listen "127.0.0.1:${PORT[wharf]}" --data-dir "$WORK/wharf" \
        >"$WORK/wharf.log" 2>&1 &
    PID[wharf]=$!
}

for t in "${TARGETS[@]}"; do
    case $t in
    distribution) start_distribution ;;
    wharf) start_wharf ;;
    *)
        echo "unknown target $t (expected wharf or distribution)" >&2
        exit 1
        ;;
    esac
    wait_ready "$t"
    poll_rss "${PID[$t]}" "$WORK/$t.maxrss" &
    POLLER[$t]=$!
    log "$t: pid ${PID[$t]}, http://127.0.0.1:${PORT[$t]}"
done

# --- load --------------------------------------------------------------------

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    ARGS=(--blobs 8 --blob-mib 1 --chunk-kib 256 --manifests 50 --head-seconds 2 --tags-seconds 2)
else
    ARGS=()
fi
read -r -a EXTRA <<<"${BENCH_ARGS:-}"
ARGS+=("${EXTRA[@]}")

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
log "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); seed $SEED"
log "distribution: $("$DIST_BIN" --version 2>&1 | head -n1)"

SCENARIOS=(push-monolithic push-streamed push-chunked pull head manifest-put tags tags-paged)
failed=0
for s in "${SCENARIOS[@]}"; do
    for t in "${TARGETS[@]}"; do
        # Flush the previous run's writes so their writeback does not land in
        # this measurement.
        sync
        # Each invocation sets up what its scenario needs (same seed, so the
        # blobs pull/head/tags expect are found rather than re-pushed).
        if ! "$BENCH_BIN" run --registry "http://127.0.0.1:${PORT[$t]}" --label "$t" \
            --seed "$SEED" --scenario "$s" "${ARGS[@]}" >>"$RESULTS"; then
            log "$s on $t reported errors (see above)"
            failed=1
        fi
        if ! kill -0 "${PID[$t]}" 2>/dev/null; then
            echo "$t died during $s; log:" >&2
            tail -n 50 "$WORK/$t.log" >&2
            exit 1
        fi
    done
done

# --- memory and report -------------------------------------------------------

for t in "${TARGETS[@]}"; do
    hwm=$(status_kib "${PID[$t]}" VmHWM)
    rss=$(status_kib "${PID[$t]}" VmRSS)
    polled=$(cat "$WORK/$t.maxrss" 2>/dev/null || echo 0)
    for row in "peak_rss_vmhwm $hwm" "max_polled_vmrss $polled" "final_vmrss $rss"; do
        read -r name kib <<<"$row"
        printf '{"label":"%s","scenario":"%s","figure":%s,"unit":"MiB","errors":0}\n' \
            "$t" "$name" "$(awk -v k="$kib" 'BEGIN{printf "%.1f", k/1024}')" >>"$RESULTS"
    done
done

if [[ -n ${BENCH_OUT:-} ]]; then cp "$RESULTS" "$BENCH_OUT"; fi

labels=wharf,distribution
if ((${#TARGETS[@]} == 1)); then labels=${TARGETS[0]}; fi
echo
"$BENCH_BIN" table --labels "$labels" "$RESULTS"
if ((failed)); then
    echo
    echo "SOME SCENARIOS HAD ERRORS: their figures are marked (ERR n)" >&2
fi
exit "$failed"
