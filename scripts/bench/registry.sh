#!/usr/bin/env bash
# Benchmarks Wharf against CNCF Distribution with identical load.
#
# Builds wharf and wharf-bench, installs Distribution (Debian package
# docker-registry) if missing, starts both registries on loopback with
# temporary storage, runs every wharf-bench scenario against each registry in
# turn (scenario X on Distribution, then on Wharf, then scenario Y ...), samples
# each server's RSS, and prints a comparison table.
#
# Targets (BENCH_TARGETS picks among them):
#   distribution           Distribution 2.8, no auth
#   wharf                  wharf serve, no auth (the open mode)
#   distribution-htpasswd  Distribution with `auth: htpasswd` (bcrypt entry, cost 5, made
#                          with htpasswd from apache2-utils, installed if missing, or
#                          Python's bcrypt), used with --basic bench:<random password>
#   wharf-auth             wharf serve --auth, used with --basic bench:<password> of a
#                          token created through the ARM API whose scope map allows only
#                          repositories/wharf-bench/* (content read/write, metadata read)
#   wharf-bearer           like wharf-auth, but wharf-bench follows the Docker token flow
#                          (--bearer-flow: one token from /oauth2/token, then Bearer)
#   distribution-proxy     Distribution with `storage.redirect.disable: true`. On object
#                          storage Distribution answers a blob GET with a 307 to a
#                          presigned URL by default, so the client reads from the S3 server
#                          itself; with redirects off it streams the bytes as Wharf does.
#                          With BENCH_BACKEND=s3 or pg-s3, pull against both shows the two
#                          comparisons (on the filesystem the setting changes nothing).
#   wharf-redirect         wharf serve with storage.redirect_downloads (BENCH_BACKEND=s3 or
#                          pg-s3 only): blob GETs are 307s to presigned URLs, as
#                          Distribution's default, so pull compares like with like
#   wharf-nocache          wharf serve with storage.blob_cache_mib = 0 (BENCH_BACKEND=s3 or
#                          pg-s3 only): every blob GET streams from the bucket, as with no
#                          node-local copies; `wharf` keeps copies (the default 1 GiB), so
#                          its pull of the blobs it was just pushed reads its own disk
# The table's columns follow the order wharf-auth, wharf-bearer, distribution-htpasswd,
# wharf, wharf-nocache, wharf-redirect, distribution, distribution-proxy (those that ran);
# its ratios are the first column over each other.
#
# Environment:
#   BENCH_QUICK=1        small fast run (8 x 1 MiB blobs, 50 manifests, 2 s timed scenarios)
#   BENCH_BACKEND=s3     blobs on object storage: moto in server mode (scripts/services.sh,
#                        on loopback) holds Wharf's blobs (--blob-store s3://…) and
#                        Distribution's (its s3 storage driver), one bucket, two prefixes;
#                        targets distribution, distribution-proxy and wharf only
#   BENCH_BACKEND=pg-s3  as s3, and Wharf's metadata in PostgreSQL (scripts/services.sh
#                        starts it): the issue's "PostgreSQL + S3" against Distribution's
#                        s3 driver
#   BENCH_AUTH=1         the cost of access control: targets "distribution-htpasswd
#                        wharf-auth wharf" in one run, so the table has the ratios
#                        wharf-auth/distribution-htpasswd and wharf-auth/wharf (no auth)
#   BENCH_TARGETS=...    registries to run, default "distribution wharf" (see above)
#   BENCH_ARGS=...       extra arguments for every `wharf-bench run` (e.g. "--blobs 64")
#   BENCH_SEED=N         content/repository seed (default: the clock)
#   BENCH_OUT=FILE       also copy the JSON result lines there
#   BENCH_SKIP_BUILD=1   use already-built binaries
#   BENCH_KEEP=1         keep the temporary directory (data and server logs)
#   WHARF_BIN, BENCH_BIN, DIST_BIN   binary overrides
#   WHARF_PORT, DIST_PORT            ports of the no-auth targets (default: free ports
#                                    from 15000 up); the others take free ports too
# Exit status: 0 if every scenario ran without errors, 1 otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WHARF_BIN=${WHARF_BIN:-$TARGET_DIR/release/wharf}
BENCH_BIN=${BENCH_BIN:-$TARGET_DIR/release/wharf-bench}
DIST_BIN=${DIST_BIN:-/usr/bin/docker-registry}
if [[ ${BENCH_AUTH:-0} == 1 ]]; then
    DEFAULT_TARGETS="distribution-htpasswd wharf-auth wharf"
else
    DEFAULT_TARGETS="distribution wharf"
fi
read -r -a TARGETS <<<"${BENCH_TARGETS:-$DEFAULT_TARGETS}"
SEED=${BENCH_SEED:-$(date +%s)}
BACKEND=${BENCH_BACKEND:-fs}
case $BACKEND in
fs | s3 | pg-s3) ;;
*)
    echo "unknown BENCH_BACKEND=$BACKEND (expected fs, s3 or pg-s3)" >&2
    exit 1
    ;;
esac

# shellcheck source=common.sh
source "$ROOT/scripts/bench/common.sh"
has_target() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }
# Whether a target's name starts with $1 ("wharf" also matches wharf-auth).
has_target_like() { [[ " ${TARGETS[*]}" == *" $1"* ]]; }

for t in "${TARGETS[@]}"; do
    case $t in
    distribution | distribution-htpasswd | distribution-proxy | wharf | wharf-auth | wharf-bearer) ;;
    wharf-redirect | wharf-nocache)
        if [[ $BACKEND != s3 && $BACKEND != pg-s3 ]]; then
            echo "$t needs BENCH_BACKEND=s3 or pg-s3 (redirects and blob copies need object storage)" >&2
            exit 2
        fi
        ;;
    *)
        echo "unknown target $t (expected distribution, distribution-htpasswd, distribution-proxy, wharf, wharf-nocache, wharf-redirect, wharf-auth or wharf-bearer)" >&2
        exit 1
        ;;
    esac
done

# --- build and install -------------------------------------------------------

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    pkgs=(-p wharf-bench)
    if has_target_like wharf; then pkgs+=(-p wharf); fi
    log "building ${pkgs[*]} (release)"
    (cd "$ROOT" && cargo build --release "${pkgs[@]}")
fi

if has_target_like distribution; then install_distribution; fi

# --- servers -----------------------------------------------------------------

WORK=$(mktemp -d -t wharf-bench.XXXXXX)
# CRED: the USER:PASSWORD wharf-bench sends; FLAGS: its extra arguments;
# MGMT: the management token of a wharf with --auth.
declare -A PID=() PORT=() POLLER=() CRED=() FLAGS=() MGMT=()

cleanup() {
    local p
    if [[ -d $WORK/services ]]; then "$ROOT/scripts/services.sh" stop "$WORK/services"; fi
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
    local want=200
    case $1 in
    # With auth on, an anonymous /v2/ must be refused: that shows it is on.
    distribution-htpasswd | wharf-auth | wharf-bearer) want=401 ;;
    esac
    wait_v2 "$1" "${PID[$1]}" "${PORT[$1]}" "$WORK/$1.log" "$want"
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

start_distribution() { # target
    local t=$1 pw
    if [[ $t == distribution ]]; then
        PORT[$t]=${DIST_PORT:-$(free_port 15000)}
    else
        PORT[$t]=$(free_port 15050)
    fi
    mkdir -p "$WORK/$t"
    # Settings chosen to match Wharf's (see distribution_config in common.sh).
    distribution_config "$WORK/$t" "${PORT[$t]}" "${BACKEND#pg-}" "dist-$SEED-$t" >"$WORK/$t.yml"
    if [[ $t == distribution-proxy ]]; then
        sed -i 's/^storage:$/storage:\n  redirect:\n    disable: true/' "$WORK/$t.yml"
    fi
    if [[ $t == distribution-htpasswd ]]; then
        pw=$(random_secret 32)
        htpasswd_line bench "$pw" >"$WORK/htpasswd"
        CRED[$t]="bench:$pw"
        cat >>"$WORK/$t.yml" <<EOF
auth:
  htpasswd:
    realm: wharf-bench
    path: $WORK/htpasswd
EOF
    fi
    # aws-sdk-go refuses to start when AWS_CA_BUNDLE names a bundle it cannot load into its
    # transport; the endpoint is plain http on loopback, so no bundle is needed.
    env -u AWS_CA_BUNDLE "$DIST_BIN" serve "$WORK/$t.yml" >"$WORK/$t.log" 2>&1 &
    PID[$t]=$!
}

start_wharf() { # target
    local t=$1 auth=()
    if [[ $BACKEND == s3 || $BACKEND == pg-s3 ]]; then
        auth+=(--blob-store "s3://$SERVICES_BUCKET/wharf-$SEED-$t")
    fi
    local env=()
    if [[ $BACKEND == pg-s3 ]]; then
        local db="bench_${SEED}_${t//-/_}"
        psql -q -X "$WHARF_TEST_POSTGRES_URL" -c "CREATE DATABASE $db" >&2
        # Plain TCP on loopback, as in earlier runs (scripts/services.sh turns TLS on for the
        # tests; sslmode=prefer would take it).
        auth+=(--database "${WHARF_TEST_POSTGRES_URL%/*}/$db?sslmode=disable")
        env+=(WHARF_SECRET_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=)
    fi
    if [[ $t == wharf-redirect ]]; then
        env+=(WHARF_STORAGE_REDIRECT_DOWNLOADS=true)
    fi
    if [[ $t == wharf-nocache ]]; then
        env+=(WHARF_STORAGE_BLOB_CACHE_MIB=0)
    fi
    if [[ $t == wharf ]]; then
        PORT[$t]=${WHARF_PORT:-$(free_port 15100)}
    elif [[ $t == wharf-redirect ]]; then
        PORT[$t]=$(free_port 15120)
    elif [[ $t == wharf-nocache ]]; then
        PORT[$t]=$(free_port 15130)
    else
        PORT[$t]=$(free_port 15150)
        auth+=(--auth)
        # Chosen here so the script need not read it from the server's output.
        MGMT[$t]=wharfm_$(random_secret 32)
    fi
    mkdir -p "$WORK/$t"
    # Warn-level logs, like Distribution's config above (no per-request log).
    # A first start with --auth also prints the admin password on stdout: it
    # lands in $WORK, which is thrown away with the data.
    env "${env[@]}" WHARF_MANAGEMENT_TOKEN=${MGMT[$t]:-} WHARF_LOG=${WHARF_LOG:-warn} \
        RUST_LOG=${RUST_LOG:-warn} "$WHARF_BIN" serve "${auth[@]}" --listen "127.0.0.1:${PORT[$t]}" --data-dir "$WORK/$t" \
        >"$WORK/$t.log" 2>&1 &
    PID[$t]=$!
}

ARM_R=/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/wharf/providers/Microsoft.ContainerRegistry/registries/wharf
arm() { # target method path json
    curl -sS -f -X "$2" -H "Authorization: Bearer ${MGMT[$1]}" \
        -H 'Content-Type: application/json' -d "$4" "http://127.0.0.1:${PORT[$1]}$ARM_R$3?api-version=2025-11-01"
}

# Creates, through the ARM API as an operator would, a token that may only
# read, write and list the benchmark's repositories (wharf-bench names them
# wharf-bench/s<seed>/...), and sets CRED[target] to its name and password.
wharf_token() { # target
    local t=$1 out scope_map token
    scope_map='{"properties":{"description":"wharf-bench","actions":['
    scope_map+='"repositories/wharf-bench/*/content/read",'
    scope_map+='"repositories/wharf-bench/*/content/write",'
    scope_map+='"repositories/wharf-bench/*/metadata/read"]}}'
    arm "$t" PUT /scopeMaps/bench "$scope_map" >/dev/null
    token=$(printf '{"properties":{"scopeMapId":"%s/scopeMaps/bench"}}' "$ARM_R")
    arm "$t" PUT /tokens/bench "$token" >/dev/null
    out=$(arm "$t" POST /generateCredentials "$(printf '{"tokenId":"%s/tokens/bench"}' "$ARM_R")")
    CRED[$t]=bench:$(python3 -c 'import json, sys; print(json.load(sys.stdin)["passwords"][0]["value"])' <<<"$out")
}

if [[ $BACKEND == s3 || $BACKEND == pg-s3 ]]; then
    chmod o+x "$WORK" # PostgreSQL runs as its own user
    "$ROOT/scripts/services.sh" start "$WORK/services"
    # shellcheck disable=SC1091
    source "$WORK/services/services.env"
    log "blobs on S3 (moto) at $AWS_ENDPOINT_URL, bucket $SERVICES_BUCKET"
fi

for t in "${TARGETS[@]}"; do
    case $t in
    distribution*) start_distribution "$t" ;;
    wharf*) start_wharf "$t" ;;
    esac
    wait_ready "$t"
    case $t in
    wharf-auth) wharf_token "$t" ;;
    wharf-bearer)
        wharf_token "$t"
        FLAGS[$t]=--bearer-flow
        ;;
    esac
    if [[ -n ${CRED[$t]:-} ]]; then
        # Fail here, once, rather than in every scenario, if they do not work.
        code=$(curl -s -o /dev/null -w '%{http_code}' -u "${CRED[$t]}" \
            "http://127.0.0.1:${PORT[$t]}/v2/") || true
        if [[ $code != 200 ]]; then
            echo "$t: GET /v2/ with the benchmark's credentials answered $code; log:" >&2
            tail -n 50 "$WORK/$t.log" >&2
            exit 1
        fi
    fi
    poll_rss "${PID[$t]}" "$WORK/$t.maxrss" &
    POLLER[$t]=$!
    log "$t: pid ${PID[$t]}, http://127.0.0.1:${PORT[$t]}${CRED[$t]:+ (auth: ${CRED[$t]%%:*})}"
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
if has_target_like distribution; then
    log "distribution: $("$DIST_BIN" --version 2>&1 | head -n1)"
fi

SCENARIOS=(push-monolithic push-streamed push-chunked pull head manifest-put tags tags-paged)
failed=0
for s in "${SCENARIOS[@]}"; do
    for t in "${TARGETS[@]}"; do
        # Flush the previous run's writes so their writeback does not land in
        # this measurement.
        sync
        # Each invocation sets up what its scenario needs (same seed, so the
        # blobs pull/head/tags expect are found rather than re-pushed). The
        # credentials go by environment, which `ps` does not show.
        # shellcheck disable=SC2086 # FLAGS holds zero or one word
        if ! WHARF_BENCH_BASIC=${CRED[$t]:-} "$BENCH_BIN" run \
            --registry "http://127.0.0.1:${PORT[$t]}" --label "$t" --seed "$SEED" \
            --scenario "$s" ${FLAGS[$t]:-} "${ARGS[@]}" >>"$RESULTS"; then
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

# Columns in a fixed order so the first is the registry the ratios are about.
labels=
for t in wharf-auth wharf-bearer distribution-htpasswd wharf wharf-nocache wharf-redirect distribution distribution-proxy; do
    if has_target "$t"; then labels+=${labels:+,}$t; fi
done
echo
"$BENCH_BIN" table --labels "$labels" "$RESULTS"
if ((failed)); then
    echo
    echo "SOME SCENARIOS HAD ERRORS: their figures are marked (ERR n)" >&2
fi
exit "$failed"
