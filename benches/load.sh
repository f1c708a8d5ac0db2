#!/usr/bin/env bash
# The load benchmark: warden against HAProxy (and nginx when present), in one run.
#
#   apt-get install wrk haproxy        # once; nginx and nghttp2-client (h2load) are optional
#   bash benches/load.sh               # full run (about 18 minutes + the release build)
#   QUICK=1 bash benches/load.sh       # smoke test: DURATION=2 REPS=1 TOKENS=5000
#
# What it does (docs/performance.md explains how to read the output):
#   - builds warden and the examples bench_upstream and mint_tokens in release;
#   - makes RS256/ES256 keys (`warden keygen`) and a 64-character HS256 secret
#     in a temporary directory, and mints pools of distinct tokens; makes an
#     ECDSA P-256 certificate for 127.0.0.1 that warden (rustls) and HAProxy
#     (OpenSSL) both serve;
#   - starts the static upstream on the load core, and warden (`workers =
#     WORKERS`), HAProxy (`nbthread WORKERS`), nginx (one process, if
#     installed) and the floor (one thread) on the proxy core(s);
#   - checks that each answers 200 to a valid token and 401 to a bad one,
#     that both TLS listeners serve the same certificate, and that the
#     handshake client never resumes a TLS session;
#   - runs `wrk -t1 -c64` on the load core against each case, REPS times,
#     interleaved, and reports medians: requests/s, p50/p99 latency, the
#     proxy's CPU per request (utime+stime from /proc/PID/stat), its peak RSS
#     (VmHWM), and the ratios to direct and to HAProxy; HTTPS keep-alive and
#     one full TLS handshake per request (wrk with `Connection: close` and a
#     preloaded shim that stops OpenSSL resuming sessions and sending an IP
#     address as SNI) against warden and HAProxy on the same certificate;
#     and HTTP/2 cleartext with prior knowledge (`h2load -c8 -m8`) against
#     both, when h2load is installed;
#   - measures warden's memory with 1,000 idle keep-alive connections;
#   - when redis-server is installed, also runs warden with
#     `[shared_state] backend = "redis"` (a redis-server on the load core)
#     and a rate-limited route, and reports what shared state and rate
#     limits cost per request against the same routes in memory.
# It installs nothing, and stops every process it started on exit.
#
# Settings (environment):
#   DURATION=10        seconds per wrk (and h2load) run
#   REPS=3             interleaved repetitions; the report shows medians
#   CONNECTIONS=64     wrk connections
#   H2_CLIENTS=8 H2_STREAMS=8  h2load connections and concurrent streams per
#                      connection (h2load -c H2_CLIENTS -m H2_STREAMS: 64 streams in all)
#   WORKERS=1          proxy worker threads: warden `workers`, HAProxy `nbthread`;
#                      nginx stays one process (master_process off ignores
#                      worker_processes) and the floor one thread. WORKERS=2
#                      pins the proxies to cores 0,1, shared with wrk and the upstream
#   TOKENS=100000      distinct tokens per algorithm (RS256 and ES256)
#   HS256_TOKENS=4*TOKENS  distinct HS256 tokens (cheap to sign; HS256 runs fastest)
#   IDLE_CONNECTIONS=1000  idle keep-alive connections for the memory check
#   BASE_PORT=28100    13 consecutive ports from here on 127.0.0.1, below the ephemeral range
#   PROXY_CORE=0 LOAD_CORE=1   the cores to pin the proxies and wrk+upstream to
#                      (PROXY_CORE defaults to 0,...,WORKERS-1 when WORKERS > 1: 0,1 for 2)
#   SKIP_BUILD=1       use the binaries already built
#   KEEP_TMP=1         keep the temporary directory (configs, logs, raw wrk output)
#   HAPROXY_TEMPLATE=  the HAProxy peer config (default: ../shared/bench/haproxy-peer.cfg.in
#                      if it exists, else benches/haproxy-peer.cfg.in); the TLS
#                      frontends are appended to it by this script
#   QUICK=1            DURATION=2 REPS=1 TOKENS=5000 unless set explicitly
#   ONLY="id id ..."   run only these cases (ids as in the report's tsv), e.g.
#                      ONLY="warden-public warden-limited warden-cached warden-redis-cached".
#                      The ids: direct haproxy-plain nginx-plain floor warden-public
#                      haproxy-hs256 warden-hs256 haproxy-rs256 warden-rs256
#                      haproxy-es256 warden-es256 warden-cached warden-jwe
#                      warden-jwe-cached warden-limited warden-minted
#                      warden-redis-cached warden-redis-limited haproxy-tls warden-tls
#                      haproxy-handshake warden-handshake haproxy-h2 warden-h2
#   NO_REDIS=1         skip the shared-state cases even if redis-server is installed
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [[ "${QUICK:-0}" == 1 ]]; then
    DURATION=${DURATION:-2}
    REPS=${REPS:-1}
    TOKENS=${TOKENS:-5000}
fi
DURATION=${DURATION:-10}
REPS=${REPS:-3}
CONNECTIONS=${CONNECTIONS:-64}
TOKENS=${TOKENS:-100000}
HS256_TOKENS=${HS256_TOKENS:-$((TOKENS * 4))}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-1000}
BASE_PORT=${BASE_PORT:-28100}
H2_CLIENTS=${H2_CLIENTS:-8}
H2_STREAMS=${H2_STREAMS:-8}
WORKERS=${WORKERS:-1}
LOAD_CORE=${LOAD_CORE:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}

say() { printf '%s\n' "$*"; }
die() {
    printf 'load.sh: %s\n' "$*" >&2
    exit 1
}
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "WORKERS must be a positive integer, not $WORKERS"
for n in "$H2_CLIENTS" "$H2_STREAMS"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "H2_CLIENTS and H2_STREAMS must be positive integers, not $n"
done
if [[ -z "${PROXY_CORE:-}" ]]; then
    PROXY_CORE=0
    ((WORKERS == 1)) || PROXY_CORE=$(seq -s, 0 $((WORKERS > $(nproc) ? $(nproc) - 1 : WORKERS - 1)))
fi

# ---------------------------------------------------------------- tools

find_tool() { # name -> path, also looking in the sbin directories
    command -v "$1" 2>/dev/null && return 0
    local dir
    for dir in /usr/sbin /sbin /usr/local/sbin; do
        [[ -x "$dir/$1" ]] && {
            echo "$dir/$1"
            return 0
        }
    done
    return 1
}

missing=()
WRK=$(find_tool wrk) || missing+=(wrk)
HAPROXY=$(find_tool haproxy) || missing+=(haproxy)
OPENSSL=$(find_tool openssl) || missing+=(openssl)
CURL=$(find_tool curl) || missing+=(curl)
TASKSET=$(find_tool taskset) || missing+=("taskset (util-linux)")
SS=$(find_tool ss) || missing+=("ss (iproute2)")
command -v cargo >/dev/null 2>&1 || missing+=("cargo (rustup)")
if ((${#missing[@]})); then
    die "missing: ${missing[*]}. This script installs nothing; install them first, e.g.
    apt-get install wrk haproxy openssl curl
(nginx is optional: apt-get install nginx adds it as a second plain-proxy peer)"
fi
NGINX=$(find_tool nginx) || NGINX=""
H2LOAD=$(find_tool h2load) || H2LOAD=""
# The TLS cases preload a small shim into wrk (see wrk-tls.c below);
# the C compiler that links Rust builds it.
CC_TOOL=$(find_tool "${CC:-cc}") || CC_TOOL=$(find_tool gcc) || CC_TOOL=$(find_tool clang) || CC_TOOL=""
REDIS_SERVER=""
[[ "${NO_REDIS:-0}" == 1 ]] || REDIS_SERVER=$(find_tool redis-server) || REDIS_SERVER=""

CORES=$(nproc)
if ((CORES < 2)); then
    say "warning: $CORES core: the proxy and the load generator share it; ratios mean little"
    PROXY_CORE=0
    LOAD_CORE=0
fi
cpu_list() { # taskset list ("0,2-3") -> one core a line
    local part parts
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
    done
}
SHARED_CORES=$(sort -n <(cpu_list "$PROXY_CORE") <(cpu_list "$LOAD_CORE") | uniq -d | paste -sd, -)
CORES_WARNING=""
if [[ -n $SHARED_CORES ]]; then
    CORES_WARNING="the proxies (cores $PROXY_CORE) share core $SHARED_CORES with wrk and the upstream (core $LOAD_CORE): the load generator takes CPU from them, so compare CPU per request and ratios within this run only"
    ((CORES < 2)) || say "warning: $CORES_WARNING"
fi
CLK_TCK=$(getconf CLK_TCK)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
((IDLE_CONNECTIONS + 100 <= $(ulimit -n))) ||
    die "ulimit -n is $(ulimit -n); the idle-connection check needs more than $IDLE_CONNECTIONS"

PORT_UPSTREAM=$BASE_PORT
PORT_HAPROXY=$((BASE_PORT + 1))
PORT_HS256=$((BASE_PORT + 2))
PORT_RS256=$((BASE_PORT + 3))
PORT_ES256=$((BASE_PORT + 4))
PORT_WARDEN=$((BASE_PORT + 5))
PORT_ADMIN=$((BASE_PORT + 6))
PORT_NGINX=$((BASE_PORT + 7))
PORT_FLOOR=$((BASE_PORT + 8))
PORT_REDIS=$((BASE_PORT + 9))
PORT_HAPROXY_TLS=$((BASE_PORT + 10)) # HAProxy's TLS frontend (keep-alive and handshake cases)
PORT_WARDEN_TLS=$((BASE_PORT + 11))  # warden-tls.toml's listener
PORT_TLS_PROBE=$((BASE_PORT + 12))   # HAProxy TLS frontend that reports resumption, for the check
PORTS=13
# Outside the ephemeral range, or an outgoing connection (wrk, the proxies'
# upstream connections) could hold one of them when warden restarts.
read -r EPHEMERAL_LOW EPHEMERAL_HIGH </proc/sys/net/ipv4/ip_local_port_range
if ((BASE_PORT + PORTS - 1 >= EPHEMERAL_LOW && BASE_PORT <= EPHEMERAL_HIGH)); then
    die "ports $BASE_PORT-$((BASE_PORT + PORTS - 1)) are in the ephemeral range $EPHEMERAL_LOW-$EPHEMERAL_HIGH; set BASE_PORT below $((EPHEMERAL_LOW - PORTS))"
fi
for port in $(seq "$BASE_PORT" $((BASE_PORT + PORTS - 1))); do
    if [[ -n $("$SS" -Htln "sport = :$port" 2>/dev/null) ]]; then
        die "port $port is in use; set BASE_PORT to the first of $PORTS free ports"
    fi
done

if [[ -n "${HAPROXY_TEMPLATE:-}" ]]; then
    :
elif [[ -f "$ROOT/../shared/bench/haproxy-peer.cfg.in" ]]; then
    HAPROXY_TEMPLATE="$ROOT/../shared/bench/haproxy-peer.cfg.in"
else
    HAPROXY_TEMPLATE="$ROOT/benches/haproxy-peer.cfg.in"
fi
[[ -f "$HAPROXY_TEMPLATE" ]] || die "no HAProxy template at $HAPROXY_TEMPLATE"

# ---------------------------------------------------------------- the cases

# id -> proxy process, URL, token pool (distinct tokens) or one token (repeated),
# and the client: wrk (keep-alive, the default), wrk-close (wrk with
# `Connection: close` and no TLS session resumption: one full handshake per
# request) or h2load (HTTP/2).
declare -A CASE_PROXY CASE_URL CASE_POOL CASE_TOKEN CASE_LABEL CASE_CLIENT
CASES=()
add_case() { # id proxy url label [pool]
    if [[ -n "${ONLY:-}" && " $ONLY " != *" $1 "* ]]; then
        return 0
    fi
    CASES+=("$1")
    CASE_PROXY[$1]=$2
    CASE_URL[$1]=$3
    CASE_LABEL[$1]=$4
    CASE_POOL[$1]=${5:-}
}
has_case() { [[ -n "${CASE_URL[$1]:-}" ]]; }
drop_case() { # id: takes a case out of the run (a tool it needs turned out missing or unusable)
    local id kept=()
    for id in "${CASES[@]}"; do
        [[ $id == "$1" ]] || kept+=("$id")
    done
    CASES=("${kept[@]}")
    unset "CASE_URL[$1]"
}
client_of() { echo "${CASE_CLIENT[$1]:-wrk}"; }
add_case direct none "http://127.0.0.1:$PORT_UPSTREAM/public" "direct to upstream"
add_case haproxy-plain haproxy "http://127.0.0.1:$PORT_HAPROXY/public" "HAProxy plain"
if [[ -n $NGINX ]]; then
    add_case nginx-plain nginx "http://127.0.0.1:$PORT_NGINX/public" "nginx plain"
fi
# The floor: a bare hyper proxy (no routing, auth, logs or metrics) on a
# one-worker multi-thread tokio runtime (warden's before `workers`), so the
# report shows what warden's own work costs. It stays one thread with WORKERS.
add_case floor floor "http://127.0.0.1:$PORT_FLOOR/public" "hyper bare proxy (floor)"
add_case warden-public warden "http://127.0.0.1:$PORT_WARDEN/public" "warden public"
add_case haproxy-hs256 haproxy "http://127.0.0.1:$PORT_HS256/hs256" "HAProxy jwt HS256" hs256
add_case warden-hs256 warden "http://127.0.0.1:$PORT_WARDEN/hs256" "warden jwt HS256" hs256
add_case haproxy-rs256 haproxy "http://127.0.0.1:$PORT_RS256/rs256" "HAProxy jwt RS256" rs256
add_case warden-rs256 warden "http://127.0.0.1:$PORT_WARDEN/rs256" "warden jwt RS256" rs256
add_case haproxy-es256 haproxy "http://127.0.0.1:$PORT_ES256/es256" "HAProxy jwt ES256" es256
add_case warden-es256 warden "http://127.0.0.1:$PORT_WARDEN/es256" "warden jwt ES256" es256
add_case warden-cached warden "http://127.0.0.1:$PORT_WARDEN/es256" "warden jwt repeated (cache)"
# The ES256 tokens again, each encrypted to warden (ECDH-ES+A256KW, A256GCM):
# nested JWTs, distinct and repeated.
add_case warden-jwe warden "http://127.0.0.1:$PORT_WARDEN/es256" "warden jwe ES256 in ECDH-ES+A256KW" es256-jwe
add_case warden-jwe-cached warden "http://127.0.0.1:$PORT_WARDEN/es256" "warden jwe repeated (cache)"
# A public route with a rate limit by client_ip that never refuses: what
# counting costs (SPEC §11), against warden-public.
add_case warden-limited warden "http://127.0.0.1:$PORT_WARDEN/limited" "warden public + rate limit"
# The repeated token again, with an upstream token minted (and reused) per caller.
add_case warden-minted warden "http://127.0.0.1:$PORT_WARDEN/minted" "warden jwt repeated + upstream token"
# HTTPS with keep-alive: warden (rustls) and HAProxy (OpenSSL) on the same
# ECDSA P-256 certificate; wrk offers no ALPN, so both speak HTTP/1.1.
add_case haproxy-tls haproxy "https://127.0.0.1:$PORT_HAPROXY_TLS/public" "HAProxy TLS keep-alive"
add_case warden-tls warden-tls "https://127.0.0.1:$PORT_WARDEN_TLS/public" "warden TLS keep-alive"
# A new connection per request: TCP connect + a full TLS 1.3 handshake + one
# request. wrk alone would resume the session on every reconnection, so the
# handshake cases preload a shim that makes it start each one without a session.
if [[ -n $CC_TOOL ]]; then
    add_case haproxy-handshake haproxy "https://127.0.0.1:$PORT_HAPROXY_TLS/public" "HAProxy TLS handshakes"
    add_case warden-handshake warden-tls "https://127.0.0.1:$PORT_WARDEN_TLS/public" "warden TLS handshakes"
    CASE_CLIENT[haproxy-handshake]=wrk-close
    CASE_CLIENT[warden-handshake]=wrk-close
fi
# HTTP/2 from the client: h2load, cleartext with prior knowledge (h2c), to
# the same plain listeners as haproxy-plain and warden-public.
if [[ -n $H2LOAD ]]; then
    add_case haproxy-h2 haproxy "http://127.0.0.1:$PORT_HAPROXY/public" "HAProxy h2c [mean/max]"
    add_case warden-h2 warden "http://127.0.0.1:$PORT_WARDEN/public" "warden h2c [mean/max]"
    CASE_CLIENT[haproxy-h2]=h2load
    CASE_CLIENT[warden-h2]=h2load
fi
if [[ -n $REDIS_SERVER ]]; then
    # The same routes with the shared state in Redis (SPEC §10).
    add_case warden-redis-cached warden-redis "http://127.0.0.1:$PORT_WARDEN/es256" "warden jwt repeated, redis"
    add_case warden-redis-limited warden-redis "http://127.0.0.1:$PORT_WARDEN/limited" "warden rate limit, redis"
fi

# ---------------------------------------------------------------- estimate

runs=$((${#CASES[@]} * REPS))
run_secs=$((runs * (DURATION + 3) + 10))
mint_secs=$((TOKENS * 14 / 10 / 1000 / CORES + 5)) # RS256 signing: about 1.4 ms of CPU per token
total_secs=$((run_secs + mint_secs + 30))
if has_case haproxy-tls || has_case warden-tls || has_case haproxy-handshake || has_case warden-handshake; then
    total_secs=$((total_secs + 4)) # the TLS client check: two 1-s wrk runs
fi
say "warden load benchmark: ${#CASES[@]} cases x $REPS reps x ${DURATION}s at $CONNECTIONS connections" \
    "(tokens: $TOKENS RS256/ES256, $HS256_TOKENS HS256)"
say "estimated time: about $((total_secs / 60)) min $((total_secs % 60)) s, plus the release build if it is not up to date"
[[ -n $NGINX ]] || say "nginx not found: the nginx plain-proxy case is skipped (optional)"
[[ -n $H2LOAD ]] || say "h2load not found: the HTTP/2 cases are skipped (optional: apt-get install nghttp2-client)"
[[ -n $CC_TOOL ]] || say "no C compiler (cc) found: the TLS handshake cases are skipped (they preload a small shim into wrk)"

# ---------------------------------------------------------------- build

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WARDEN="$TARGET_DIR/release/warden"
UPSTREAM="$TARGET_DIR/release/examples/bench_upstream"
FLOOR="$TARGET_DIR/release/examples/bare_proxy"
MINT="$TARGET_DIR/release/examples/mint_tokens"
if [[ "$SKIP_BUILD" != 1 ]]; then
    say "== cargo build --release --bin warden --example bench_upstream --example mint_tokens --example bare_proxy"
    cargo build --release --bin warden --example bench_upstream --example mint_tokens --example bare_proxy
fi
for bin in "$WARDEN" "$UPSTREAM" "$MINT" "$FLOOR"; do
    [[ -x "$bin" ]] || die "$bin is missing (run without SKIP_BUILD=1)"
done

# ---------------------------------------------------------------- processes

TMP=$(mktemp -d "${TMPDIR:-/tmp}/warden-load.XXXXXX")
UPSTREAM_PID="" HAPROXY_PID="" NGINX_PID="" WARDEN_PID="" HOLD_PID="" FLOOR_PID="" REDIS_PID=""

stop_pid() { # pid
    [[ -n "$1" ]] || return 0
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_pid "$HOLD_PID"
    stop_pid "$WARDEN_PID"
    stop_pid "$HAPROXY_PID"
    stop_pid "$NGINX_PID"
    stop_pid "$FLOOR_PID"
    stop_pid "$UPSTREAM_PID"
    stop_pid "$REDIS_PID"
    if [[ "$KEEP_TMP" == 1 || $status -ne 0 ]]; then
        say "kept $TMP (configs, logs, raw wrk output)"
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_http() { # url pid name
    local i
    for ((i = 0; i < 100; i++)); do
        "$CURL" -s -o /dev/null --max-time 1 "$1" && return 0
        kill -0 "$2" 2>/dev/null || {
            tail -20 "$TMP/$3.log" >&2
            die "$3 exited at start-up (log above)"
        }
        sleep 0.1
    done
    die "$3 did not answer at $1 within 10 s"
}

cpu_ticks() { # pid -> utime + stime, in clock ticks
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) } # the fields after the command name
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}

vm_kb() { # pid field -> kB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

start_upstream() {
    "$TASKSET" -c "$LOAD_CORE" "$UPSTREAM" "$PORT_UPSTREAM" >"$TMP/upstream.log" 2>&1 &
    UPSTREAM_PID=$!
    wait_http "http://127.0.0.1:$PORT_UPSTREAM/" "$UPSTREAM_PID" upstream
}

start_haproxy() {
    "$TASKSET" -c "$PROXY_CORE" "$HAPROXY" -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    wait_http "http://127.0.0.1:$PORT_HAPROXY/" "$HAPROXY_PID" haproxy
}

start_floor() {
    TOKIO_WORKER_THREADS=1 BARE_RUNTIME=multi "$TASKSET" -c "$PROXY_CORE" "$FLOOR" "$PORT_FLOOR" "$PORT_UPSTREAM" \
        >"$TMP/floor.log" 2>&1 &
    FLOOR_PID=$!
    wait_http "http://127.0.0.1:$PORT_FLOOR/" "$FLOOR_PID" floor
}

start_nginx() {
    "$TASKSET" -c "$PROXY_CORE" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx.conf" >"$TMP/nginx.log" 2>&1 &
    NGINX_PID=$!
    wait_http "http://127.0.0.1:$PORT_NGINX/" "$NGINX_PID" nginx
}

# A fresh warden for every run: its verified-token cache starts empty, so a
# cold case never hits it, and VmHWM is the peak of that run alone. It serves
# on its own `workers = WORKERS` current-thread runtimes (in the config);
# TOKIO_WORKER_THREADS=1 only sizes its admin and background runtime.
start_warden() { # [config file name in $TMP]
    WARDEN_REDIS_URL="redis://127.0.0.1:$PORT_REDIS/0" TOKIO_WORKER_THREADS=1 \
        "$TASKSET" -c "$PROXY_CORE" "$WARDEN" run --config "$TMP/${1:-warden.toml}" \
        >>"$TMP/warden.log" 2>&1 &
    WARDEN_PID=$!
    wait_http "http://127.0.0.1:$PORT_ADMIN/healthz" "$WARDEN_PID" warden
}

# Redis shares the load core with wrk and the upstream: its CPU is
# reported per request on its own.
start_redis() {
    "$TASKSET" -c "$LOAD_CORE" "$REDIS_SERVER" --port "$PORT_REDIS" --bind 127.0.0.1 --save "" \
        --appendonly no >"$TMP/redis.log" 2>&1 &
    REDIS_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT_REDIS") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "redis-server did not listen on $PORT_REDIS within 10 s: $(tail -5 "$TMP/redis.log")"
}

stop_warden() {
    stop_pid "$WARDEN_PID"
    WARDEN_PID=""
}

# ---------------------------------------------------------------- keys, tokens, configs

say "== keys and tokens in $TMP"
mkdir -p "$TMP/keys" "$TMP/tokens" "$TMP/nginx/logs"
"$WARDEN" keygen --alg RS256 --out "$TMP/keys/rs256.pem" >/dev/null
"$WARDEN" keygen --alg ES256 --out "$TMP/keys/es256.pem" >/dev/null
# 64 ASCII characters: HAProxy's jwt_verify and warden's secret_file both use these bytes as the key.
"$OPENSSL" rand -hex 32 | tr -d '\n' >"$TMP/keys/hs256.secret"
"$OPENSSL" pkey -in "$TMP/keys/rs256.pem" -pubout -out "$TMP/keys/rs256.pub" 2>/dev/null
"$OPENSSL" pkey -in "$TMP/keys/es256.pem" -pubout -out "$TMP/keys/es256.pub" 2>/dev/null
# warden's decryption key for the nested-JWT cases (PKCS#8 P-256).
"$OPENSSL" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TMP/keys/enc.pem" 2>/dev/null
HS256_SECRET=$(<"$TMP/keys/hs256.secret")
# The TLS cases' certificate, served by both warden and HAProxy: ECDSA P-256,
# self-signed, for bench.local and 127.0.0.1. HAProxy wants the certificate
# and its key in one PEM file.
mkdir -p "$TMP/tls"
"$OPENSSL" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench.local \
    -addext subjectAltName=DNS:bench.local,IP:127.0.0.1 \
    -keyout "$TMP/tls/key.pem" -out "$TMP/tls/cert.pem" 2>"$TMP/tls/req.log" ||
    die "openssl req failed: $(cat "$TMP/tls/req.log")"
cat "$TMP/tls/cert.pem" "$TMP/tls/key.pem" >"$TMP/tls/haproxy.pem"
TLS_FINGERPRINT=$("$OPENSSL" x509 -in "$TMP/tls/cert.pem" -noout -fingerprint -sha256 | cut -d= -f2)

# wrk (OpenSSL) ends a connection with SSL_shutdown + SSL_clear, which keeps
# the session, so its next SSL_connect on that connection resumes it (TLS 1.3
# PSK, no certificate signature) whenever the server issued a ticket; rustls
# and HAProxy both do by default. And it sends the URL's host as SNI even
# when it is an IP address, which RFC 6066 forbids: rustls ignores it and
# logs a warning per handshake. So the TLS cases preload this shim into wrk:
# before a handshake starts, it drops the session (every connection makes a
# full handshake) and an IP-literal SNI (as a client connecting to an address
# does). The checks prove both against HAProxy.
if [[ -n $CC_TOOL ]] && { has_case haproxy-tls || has_case warden-tls ||
    has_case haproxy-handshake || has_case warden-handshake; }; then
    cat >"$TMP/wrk-tls.c" <<'EOF'
/* Written by benches/load.sh: LD_PRELOAD into wrk. Before each TLS handshake,
 * no session to resume, and no SNI when the host is an IP address. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <stddef.h>
typedef struct ssl_st SSL;
int SSL_connect(SSL *s) {
    static int (*real_connect)(SSL *);
    static int (*in_before)(const SSL *);
    static int (*set_session)(SSL *, void *);
    static const char *(*get_servername)(const SSL *, int);
    static long (*ctrl)(SSL *, int, long, void *);
    if (!real_connect) {
        real_connect = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
        in_before = (int (*)(const SSL *))dlsym(RTLD_DEFAULT, "SSL_in_before");
        set_session = (int (*)(SSL *, void *))dlsym(RTLD_DEFAULT, "SSL_set_session");
        get_servername = (const char *(*)(const SSL *, int))dlsym(RTLD_DEFAULT, "SSL_get_servername");
        ctrl = (long (*)(SSL *, int, long, void *))dlsym(RTLD_DEFAULT, "SSL_ctrl");
    }
    if (in_before(s)) { /* not mid-handshake: wrk calls SSL_connect again on WANT_READ */
        const char *name = get_servername(s, 0 /* TLSEXT_NAMETYPE_host_name */);
        unsigned char addr[16];
        set_session(s, NULL);
        if (name && (inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1))
            ctrl(s, 55 /* SSL_CTRL_SET_TLSEXT_HOSTNAME */, 0, NULL);
    }
    return real_connect(s);
}
EOF
    "$CC_TOOL" -shared -fPIC -O2 -o "$TMP/wrk-tls.so" "$TMP/wrk-tls.c" -ldl 2>"$TMP/wrk-tls.log" ||
        "$CC_TOOL" -shared -fPIC -O2 -o "$TMP/wrk-tls.so" "$TMP/wrk-tls.c" 2>"$TMP/wrk-tls.log" ||
        die "cannot build the wrk shim with $CC_TOOL: $(cat "$TMP/wrk-tls.log")"
fi

cat >"$TMP/warden.toml" <<EOF
# Written by benches/load.sh.
[server]
listen = "127.0.0.1:$PORT_WARDEN"
admin_listen = "127.0.0.1:$PORT_ADMIN"
shutdown_grace = "1s"
workers = $WORKERS

[log]
level = "warn"
format = "json"

[audit]
sink = "file"
path = "audit.log"

[[keys]]
kid = "bench-hs256"
alg = "HS256"
secret_file = "keys/hs256.secret"

[[keys]]
kid = "bench-rs256"
alg = "RS256"
private_key_file = "keys/rs256.pem"

[[keys]]
kid = "bench-es256"
alg = "ES256"
private_key_file = "keys/es256.pem"

# Decrypts the nested-JWT cases; its public half is in the JWKS (use: enc).
[[keys]]
kid = "bench-enc"
alg = "ECDH-ES+A256KW"
private_key_file = "keys/enc.pem"

[issuer]
iss = "https://issuer.bench.local"
aud = ["bench-api"]
signing_kid = "bench-es256"

[[routes]]
name = "public"
path_prefix = "/public"
upstream = "http://127.0.0.1:$PORT_UPSTREAM"
auth = "none"

# Each jwt route accepts a token of any of the three keys (the token's kid
# selects it); one route per algorithm keeps their metrics apart.
[[routes]]
name = "hs256"
path_prefix = "/hs256"
upstream = "http://127.0.0.1:$PORT_UPSTREAM"

[[routes]]
name = "rs256"
path_prefix = "/rs256"
upstream = "http://127.0.0.1:$PORT_UPSTREAM"

[[routes]]
name = "es256"
path_prefix = "/es256"
upstream = "http://127.0.0.1:$PORT_UPSTREAM"

# Like es256, with a token minted for the upstream (cached per caller).
[[routes]]
name = "minted"
path_prefix = "/minted"
upstream = "http://127.0.0.1:$PORT_UPSTREAM"
upstream_token = { aud = "bench-upstream", ttl = "60s", claims = ["sub", "scope"] }

# Counted per client address, never refused at this load (10^6 a second).
[[routes]]
name = "limited"
path_prefix = "/limited"
upstream = "http://127.0.0.1:$PORT_UPSTREAM"
auth = "none"
rate_limit = { requests = 1000000, per = "1s", burst = 1000000, key = "client_ip" }
EOF
if ! "$WARDEN" check --config "$TMP/warden.toml" >/dev/null 2>"$TMP/warden-check.log"; then
    grep -q "unknown field \`workers\`" "$TMP/warden-check.log" &&
        die "$WARDEN does not know [server] workers yet: build a newer warden (without SKIP_BUILD=1)"
    die "warden check refuses $TMP/warden.toml: $(cat "$TMP/warden-check.log")"
fi
# The same routes over TLS, on their own port.
{
    sed -e "s|^listen = \"127.0.0.1:$PORT_WARDEN\"|listen = \"127.0.0.1:$PORT_WARDEN_TLS\"|" "$TMP/warden.toml"
    cat <<EOF

[server.tls]
cert_file = "tls/cert.pem"
key_file = "tls/key.pem"
EOF
} >"$TMP/warden-tls.toml"
grep -q "^listen = \"127.0.0.1:$PORT_WARDEN_TLS\"" "$TMP/warden-tls.toml" || die "warden-tls.toml: listen not rewritten"
"$WARDEN" check --config "$TMP/warden-tls.toml" >/dev/null
{
    cat "$TMP/warden.toml"
    cat <<EOF

[shared_state]
backend = "redis"
url_env = "WARDEN_REDIS_URL"
key_prefix = "bench:"
EOF
} >"$TMP/warden-redis.toml"
# `warden check` requires the variable url_env names to be set.
WARDEN_REDIS_URL="redis://127.0.0.1:$PORT_REDIS/0" "$WARDEN" check --config "$TMP/warden-redis.toml" >/dev/null

sed -e "s|@UPSTREAM_PORT@|$PORT_UPSTREAM|g" \
    -e "s|@PORT_HAPROXY@|$PORT_HAPROXY|g" \
    -e "s|@PORT_HS256@|$PORT_HS256|g" \
    -e "s|@PORT_RS256@|$PORT_RS256|g" \
    -e "s|@PORT_ES256@|$PORT_ES256|g" \
    -e "s|@HS256_SECRET@|$HS256_SECRET|g" \
    -e "s|@KEYDIR@|$TMP/keys|g" \
    "$HAPROXY_TEMPLATE" >"$TMP/haproxy.cfg"
if grep -n '^[^#]*@[A-Z0-9_]*@' "$TMP/haproxy.cfg" >&2; then
    die "unfilled placeholders in the HAProxy config (above)"
fi
# WORKERS threads, whatever the template says (a later global section overrides it).
if grep -qE '^[[:space:]]*nbthread[[:space:]]+[0-9]+' "$TMP/haproxy.cfg"; then
    sed -i -E "s/^([[:space:]]*)nbthread[[:space:]]+[0-9]+/\1nbthread $WORKERS/" "$TMP/haproxy.cfg"
else
    printf '\nglobal\n    nbthread %s\n' "$WORKERS" >>"$TMP/haproxy.cfg"
fi
# The TLS frontends, appended so that any template works unchanged. They
# have their own backend, the same as the template's plain one.
cat >>"$TMP/haproxy.cfg" <<EOF

# Appended by benches/load.sh: TLS (OpenSSL) on the certificate warden serves.
backend bench_upstream_tls
    server up1 127.0.0.1:$PORT_UPSTREAM

frontend bench_tls
    bind 127.0.0.1:$PORT_HAPROXY_TLS ssl crt $TMP/tls/haproxy.pem alpn http/1.1
    default_backend bench_upstream_tls

# Not measured: tells the checks whether the client resumed its TLS session
# and whether it sent SNI.
frontend bench_tls_probe
    bind 127.0.0.1:$PORT_TLS_PROBE ssl crt $TMP/tls/haproxy.pem alpn http/1.1
    http-response set-header X-TLS-Resumed %[ssl_fc_is_resumed]
    http-response set-header X-TLS-SNI %[ssl_fc_has_sni]
    default_backend bench_upstream_tls
EOF
"$HAPROXY" -c -q -f "$TMP/haproxy.cfg" || die "HAProxy refuses $TMP/haproxy.cfg"

if [[ -n $NGINX ]]; then
    cat >"$TMP/nginx.conf" <<EOF
# Written by benches/load.sh: a plain reverse proxy, one process, one core.
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    upstream bench_upstream {
        server 127.0.0.1:$PORT_UPSTREAM;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PORT_NGINX;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    "$NGINX" -t -q -p "$TMP/nginx" -c "$TMP/nginx.conf" 2>"$TMP/nginx-check.log" ||
        die "nginx refuses $TMP/nginx.conf: $(cat "$TMP/nginx-check.log")"
fi

# The tokens last: minting takes the longest, and every config is valid by now.
"$MINT" --hs256-secret "$TMP/keys/hs256.secret" --rs256-key "$TMP/keys/rs256.pem" \
    --es256-key "$TMP/keys/es256.pem" --jwe-key "$TMP/keys/enc.pem" --out "$TMP/tokens" \
    --count "$TOKENS" --hs256-count "$HS256_TOKENS"
REPEATED_TOKEN=$(<"$TMP/tokens/repeated.token")
CASE_TOKEN[warden-cached]=$REPEATED_TOKEN
CASE_TOKEN[warden-redis-cached]=$REPEATED_TOKEN
CASE_TOKEN[warden-minted]=$REPEATED_TOKEN
REPEATED_JWE=$(<"$TMP/tokens/repeated-jwe.token")
CASE_TOKEN[warden-jwe-cached]=$REPEATED_JWE

# wrk scripts. stats.lua prints one summary line. pool.lua also feeds each
# request the next token of a pool file. In "once" mode (warden) it stops the
# run when the pool is used up, so no token is verified twice and warden's
# verified-token cache never hits; the measured window then ends there, and
# its length is reported. In "cycle" mode (HAProxy, which keeps no cache of
# verified tokens, so a reused token costs it the same) it starts again.
cat >"$TMP/stats.lua" <<'EOF'
local threads = {}
function setup(thread)
    threads[#threads + 1] = thread
end
function done(summary, latency, requests)
    local seconds = summary.duration / 1e6
    local exhausted = "no"
    for _, t in ipairs(threads) do
        local first, stopped = t:get("t_first"), t:get("t_stop")
        if first and stopped and stopped > first then
            seconds = stopped - first
            exhausted = "yes"
        end
    end
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d seconds=%.3f rps=%.1f p50_us=%.0f p99_us=%.0f non2xx=%d sockerr=%d exhausted=%s\n",
        summary.requests, seconds, summary.requests / seconds,
        latency:percentile(50), latency:percentile(99),
        e.status, e.connect + e.read + e.write + e.timeout, exhausted))
end
EOF
{
    cat "$TMP/stats.lua"
    cat <<'EOF'
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clock_id, bench_timespec_t *tp);
]]
local ts = ffi.new("bench_timespec_t")
local function now()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local requests, n, i, cycle = {}, 0, 0, false
function init(args)
    cycle = args[2] == "cycle"
    for token in io.lines(args[1]) do
        n = n + 1
        requests[n] = wrk.format("GET", wrk.path, { ["Authorization"] = "Bearer " .. token })
    end
    if n == 0 then
        error("empty token pool " .. args[1])
    end
end
function request()
    i = i + 1
    if i > n and cycle then
        i = 1
    elseif i > n then
        if not t_stop then
            t_stop = now()
            wrk.thread:stop()
        end
        return requests[n]
    end
    if i == 1 then
        t_first = now()
    end
    return requests[i]
end
EOF
} >"$TMP/pool.lua"

# ---------------------------------------------------------------- start and check

say "== starting the upstream (core $LOAD_CORE), HAProxy, nginx and the floor (core $PROXY_CORE)"
start_upstream
start_haproxy
start_floor
[[ -z $NGINX ]] || start_nginx
[[ -z $REDIS_SERVER ]] || start_redis

status_of() { # url [token]
    if [[ -n "${2:-}" ]]; then
        "$CURL" -s -o /dev/null --max-time 5 --cacert "$TMP/tls/cert.pem" -w '%{http_code}' -H "Authorization: Bearer $2" "$1"
    else
        "$CURL" -s -o /dev/null --max-time 5 --cacert "$TMP/tls/cert.pem" -w '%{http_code}' "$1"
    fi
}
expect() { # want label url [token]
    local got
    got=$(status_of "$3" "${4:-}")
    [[ "$got" == "$1" ]] || die "check failed: $2: got $got, want $1 ($3)"
    printf '  ok  %-44s %s\n' "$2" "$got"
}
tamper() { # token -> the same token with the end of its signature changed
    local token=$1 tail=AAAAAA
    [[ "${token: -6}" == "$tail" ]] && tail=QQQQQA
    echo "${token:0:${#token}-6}$tail"
}

say "== checks"
start_warden
for alg in hs256 rs256 es256; do
    token=$(head -n 1 "$TMP/tokens/$alg.tokens")
    bad=$(tamper "$token")
    for proxy in haproxy warden; do
        has_case "$proxy-$alg" || continue
        url=${CASE_URL[$proxy-$alg]}
        expect 200 "$proxy $alg valid token" "$url" "$token"
        expect 401 "$proxy $alg tampered signature" "$url" "$bad"
        expect 401 "$proxy $alg no token" "$url"
    done
done
expect 200 "warden repeated token" "http://127.0.0.1:$PORT_WARDEN/es256" "$REPEATED_TOKEN"
expect 200 "warden repeated token, upstream token" "http://127.0.0.1:$PORT_WARDEN/minted" "$REPEATED_TOKEN"
expect 200 "warden encrypted token" "http://127.0.0.1:$PORT_WARDEN/es256" "$(head -n 1 "$TMP/tokens/es256-jwe.tokens")"
expect 401 "warden encrypted token, tampered" "http://127.0.0.1:$PORT_WARDEN/es256" "$(tamper "$REPEATED_JWE")"
for id in direct haproxy-plain nginx-plain floor warden-public warden-limited; do
    [[ -n "${CASE_URL[$id]:-}" ]] || continue
    expect 200 "$id" "${CASE_URL[$id]}"
done
stop_warden
if [[ -n $REDIS_SERVER ]]; then
    start_warden warden-redis.toml
    expect 200 "warden (redis) repeated token" "http://127.0.0.1:$PORT_WARDEN/es256" "$REPEATED_TOKEN"
    expect 200 "warden (redis) rate-limited route" "http://127.0.0.1:$PORT_WARDEN/limited"
    # Read whole before grep: with pipefail, `curl | grep -q` fails when grep
    # stops reading before curl has written everything.
    metrics=$("$CURL" -s --max-time 5 "http://127.0.0.1:$PORT_ADMIN/metrics")
    grep -q '^warden_shared_state_up 1' <<<"$metrics" ||
        die "warden with the redis backend does not report warden_shared_state_up 1"
    stop_warden
fi

check_tls() { # label port: a verified TLS handshake with the bench certificate
    local brief fp
    brief=$(timeout 10 "$OPENSSL" s_client -brief -connect "127.0.0.1:$2" -CAfile "$TMP/tls/cert.pem" \
        -verify_ip 127.0.0.1 -verify_return_error </dev/null 2>&1) ||
        die "check failed: $1: no verified TLS handshake on port $2: $(tail -3 <<<"$brief")"
    fp=$(timeout 10 "$OPENSSL" s_client -connect "127.0.0.1:$2" </dev/null 2>/dev/null) || true
    fp=$("$OPENSSL" x509 -noout -fingerprint -sha256 <<<"$fp" 2>/dev/null | cut -d= -f2) || true
    [[ $fp == "$TLS_FINGERPRINT" ]] || die "check failed: $1 serves another certificate (SHA-256 $fp)"
    printf '  ok  %-44s %s\n' "$1" "$(awk -F': ' '/^Protocol version/ { p = $2 } /^Ciphersuite/ { c = $2 }
        /^Server Temp Key/ { k = $2 } END { printf "%s %s, %s, the bench certificate", p, c, k }' <<<"$brief")"
}
check_h2() { # label url: one request over h2c with prior knowledge
    local out
    out=$(timeout 10 "$H2LOAD" -n1 -c1 "$2" 2>&1) || true
    if ! grep -q '^Application protocol: h2c' <<<"$out" || ! grep -q '^status codes: 1 2xx' <<<"$out"; then
        die "check failed: $1: h2load -n1 against $2 did not get one 2xx over h2c: $(tail -5 <<<"$out")"
    fi
    printf '  ok  %-44s %s\n' "$1" "h2c, 200"
}
if has_case haproxy-tls || has_case haproxy-handshake; then
    expect 200 "haproxy TLS" "https://127.0.0.1:$PORT_HAPROXY_TLS/public"
    check_tls "haproxy TLS handshake" "$PORT_HAPROXY_TLS"
fi
if has_case warden-tls || has_case warden-handshake; then
    start_warden warden-tls.toml
    expect 200 "warden TLS" "https://127.0.0.1:$PORT_WARDEN_TLS/public"
    check_tls "warden TLS handshake" "$PORT_WARDEN_TLS"
    stop_warden
fi
has_case haproxy-h2 && check_h2 "haproxy-h2" "${CASE_URL[haproxy-h2]}"
if has_case warden-h2; then
    start_warden
    check_h2 "warden-h2" "${CASE_URL[warden-h2]}"
    stop_warden
fi

# The TLS client must not resume: wrk with `Connection: close` against a
# frontend that says whether each connection resumed and sent SNI, without
# the shim (for the record) and with it (must be none).
tls_probe() { # [preload] -> "resumed with_sni requests"
    local preload=() out
    [[ -z "${1:-}" ]] || preload=(env "LD_PRELOAD=$1")
    out=$("$TASKSET" -c "$LOAD_CORE" "${preload[@]}" "$WRK" -t1 -c4 -d1s -H 'Connection: close' \
        -s "$TMP/tls-probe.lua" "https://127.0.0.1:$PORT_TLS_PROBE/public" 2>&1) || true
    awk '$1 == "TLSPROBE" { print $2, $3, $4; found = 1 } END { if (!found) print "0 0 0" }' <<<"$out"
}
WRK_RESUMES="-"
if [[ -f "$TMP/wrk-tls.so" ]]; then
    cat >"$TMP/tls-probe.lua" <<'EOF'
local threads = {}
function setup(thread)
    threads[#threads + 1] = thread
end
local resumed, sni, seen = 0, 0, 0
function response(status, headers, body)
    seen = seen + 1
    if (headers["x-tls-resumed"] or headers["X-TLS-Resumed"]) == "1" then
        resumed = resumed + 1
    end
    if (headers["x-tls-sni"] or headers["X-TLS-SNI"]) == "1" then
        sni = sni + 1
    end
    wrk.thread:set("resumed", resumed)
    wrk.thread:set("sni", sni)
    wrk.thread:set("seen", seen)
end
function done(summary, latency, requests)
    local r, s, n = 0, 0, 0
    for _, t in ipairs(threads) do
        r = r + (t:get("resumed") or 0)
        s = s + (t:get("sni") or 0)
        n = n + (t:get("seen") or 0)
    end
    io.write(string.format("TLSPROBE %d %d %d\n", r, s, n))
end
EOF
    read -r plain_resumed plain_sni plain_seen < <(tls_probe)
    read -r shim_resumed shim_sni shim_seen < <(tls_probe "$TMP/wrk-tls.so")
    WRK_RESUMES="$plain_resumed of $plain_seen"
    if ((shim_seen == 0 || shim_resumed > 0 || shim_sni > 0)); then
        say "  !!  the wrk shim does not work here ($shim_resumed of $shim_seen connections resumed," \
            "$shim_sni sent SNI): the handshake cases are skipped"
        drop_case haproxy-handshake
        drop_case warden-handshake
        rm -f "$TMP/wrk-tls.so"
    else
        printf '  ok  %-44s %s\n' "TLS client: full handshakes, no IP as SNI" \
            "0 of $shim_seen resumed or sent SNI (wrk alone: $plain_resumed resumed, $plain_sni sent SNI, of $plain_seen)"
    fi
fi

# ---------------------------------------------------------------- load

RESULTS="$TMP/results.tsv"
: >"$RESULTS"

warden_cache_counts() { # -> "hits misses"
    "$CURL" -s --max-time 5 "http://127.0.0.1:$PORT_ADMIN/metrics" |
        awk '/^warden_token_cache_requests_total\{result="hit"\}/ { h = $2 }
             /^warden_token_cache_requests_total\{result="miss"\}/ { m = $2 }
             END { printf "%d %d\n", h, m }'
}

# h2load's summary -> the same fields as stats.lua's BENCH line. h2load has
# no percentiles: p50_us holds the mean latency and p99_us the maximum.
h2load_summary() { # output file
    awk 'function us(v) {
            if (v ~ /us$/) return v + 0
            if (v ~ /ms$/) return (v + 0) * 1000
            if (v ~ /s$/) return (v + 0) * 1000000
            return v + 0
         }
         /^finished in / { sec = $3; sub(/s,?$/, "", sec); rps = $4; found = 1 }
         /^requests: / { done = $6; errored = $12; timeout = $14 }
         /^status codes: / { ok = $3 }
         /^time for request:/ { max = us($5); mean = us($6) }
         END {
            if (!found) exit 1
            printf "requests=%d seconds=%.3f rps=%.1f p50_us=%.0f p99_us=%.0f non2xx=%d sockerr=%d exhausted=no\n",
                done, sec, rps, mean, max, done - ok, errored + timeout
         }' "$1"
}

run_case() { # id rep
    local id=$1 rep=$2 proxy=${CASE_PROXY[$1]} url=${CASE_URL[$1]} pool=${CASE_POOL[$1]} client
    client=$(client_of "$1")
    local pid="" out="$TMP/$client-$1-$2.txt"
    case $proxy in
    warden)
        start_warden
        pid=$WARDEN_PID
        ;;
    warden-tls)
        start_warden warden-tls.toml
        pid=$WARDEN_PID
        ;;
    warden-redis)
        start_warden warden-redis.toml
        pid=$WARDEN_PID
        ;;
    haproxy) pid=$HAPROXY_PID ;;
    nginx) pid=$NGINX_PID ;;
    floor) pid=$FLOOR_PID ;;
    esac
    local args=(-t1 "-c$CONNECTIONS" "-d${DURATION}s" --latency) preload=()
    if [[ -n $pool ]]; then
        local mode=once
        [[ $proxy == warden ]] || mode=cycle
        args+=(-s "$TMP/pool.lua" "$url" -- "$TMP/tokens/$pool.tokens" "$mode")
    elif [[ -n "${CASE_TOKEN[$id]:-}" ]]; then
        args+=(-s "$TMP/stats.lua" -H "Authorization: Bearer ${CASE_TOKEN[$id]}" "$url")
    elif [[ $client == wrk-close ]]; then
        args+=(-s "$TMP/stats.lua" -H 'Connection: close' "$url")
    else
        args+=(-s "$TMP/stats.lua" "$url")
    fi
    if [[ $url == https://* && -f "$TMP/wrk-tls.so" ]]; then
        preload=(env "LD_PRELOAD=$TMP/wrk-tls.so")
    fi
    local cpu0=0 cpu1=0 redis0=0 redis1=0
    [[ -z $pid ]] || cpu0=$(cpu_ticks "$pid")
    [[ -z $REDIS_PID ]] || redis0=$(cpu_ticks "$REDIS_PID")
    if [[ $client == h2load ]]; then
        "$TASKSET" -c "$LOAD_CORE" "$H2LOAD" "-c$H2_CLIENTS" "-m$H2_STREAMS" -D "$DURATION" "$url" >"$out" 2>&1 ||
            die "h2load failed: $(tail -5 "$out")"
    else
        "$TASKSET" -c "$LOAD_CORE" "${preload[@]}" "$WRK" "${args[@]}" >"$out" 2>&1 || die "wrk failed: $(tail -5 "$out")"
    fi
    [[ -z $pid ]] || cpu1=$(cpu_ticks "$pid")
    [[ -z $REDIS_PID ]] || redis1=$(cpu_ticks "$REDIS_PID")

    local line requests=0 seconds=1 rps=0 p50_us=0 p99_us=0 non2xx=0 sockerr=0 exhausted=no
    if [[ $client == h2load ]]; then
        line="BENCH $(h2load_summary "$out")" || die "no summary from h2load: $(tail -5 "$out")"
    else
        line=$(grep '^BENCH ' "$out") || die "no summary from wrk: $(tail -5 "$out")"
    fi
    eval "$(tr ' ' '\n' <<<"${line#BENCH }" | grep -E '^[a-z0-9_]+=[0-9.a-z]+$')"

    local cpu_us=nan core_pct=nan rss_kb=nan hit_pct=-
    if [[ -n $pid ]]; then
        read -r cpu_us core_pct < <(awk -v t=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v r="$requests" -v s="$seconds" \
            'BEGIN { c = t / hz; printf "%.2f %.0f\n", (r > 0 ? c * 1e6 / r : 0), c / s * 100 }')
        rss_kb=$(vm_kb "$pid" VmHWM)
    fi
    local redis_us=-
    if [[ $proxy == warden-redis ]]; then
        redis_us=$(awk -v t=$((redis1 - redis0)) -v hz="$CLK_TCK" -v r="$requests" \
            'BEGIN { printf "%.2f", (r > 0 ? t / hz * 1e6 / r : 0) }')
    fi
    if [[ $proxy == warden* && ( -n $pool || -n "${CASE_TOKEN[$id]:-}" ) ]]; then
        read -r hits misses < <(warden_cache_counts)
        hit_pct=$(awk -v h="$hits" -v m="$misses" 'BEGIN { printf "%.1f", (h + m > 0 ? 100 * h / (h + m) : 0) }')
    fi
    [[ $proxy != warden* ]] || stop_warden

    # Columns: id rep req/s p50 p99 cpu_us core% VmHWM window hit% non2xx
    # sockerr exhausted redis_us client (h2load rows: p50 = mean, p99 = max).
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$rep" "$rps" "$p50_us" "$p99_us" \
        "$cpu_us" "$core_pct" "$rss_kb" "$seconds" "$hit_pct" "$non2xx" "$sockerr" "$exhausted" "$redis_us" \
        "$client" >>"$RESULTS"
    local lat1=p50 lat2=p99
    [[ $client != h2load ]] || lat1=mean lat2=max
    printf '  rep %d  %-28s %9.0f req/s  %4s %6.2f ms  %4s %6.2f ms  cpu %7s us/req  core %3s%%  %5.1fs%s%s\n' \
        "$rep" "${CASE_LABEL[$id]}" "$rps" "$lat1" "$(awk -v v="$p50_us" 'BEGIN{print v/1000}')" \
        "$lat2" "$(awk -v v="$p99_us" 'BEGIN{print v/1000}')" "$cpu_us" "$core_pct" "$seconds" \
        "$([[ $exhausted == yes ]] && echo ' (pool used up)')" \
        "$([[ $non2xx == 0 && $sockerr == 0 ]] || echo "  !! $non2xx non-2xx, $sockerr socket errors")"
    sleep 1
}

say "== warm-up: 1 s each of the long-running processes"
for id in direct haproxy-plain haproxy-hs256 haproxy-rs256 haproxy-es256 haproxy-tls nginx-plain floor; do
    has_case "$id" || continue
    warm=(-s "$TMP/stats.lua" "${CASE_URL[$id]}")
    [[ -z ${CASE_POOL[$id]} ]] || warm=(-s "$TMP/pool.lua" "${CASE_URL[$id]}" -- "$TMP/tokens/${CASE_POOL[$id]}.tokens" cycle)
    "$TASKSET" -c "$LOAD_CORE" "$WRK" -t1 "-c$CONNECTIONS" -d1s "${warm[@]}" >/dev/null 2>&1 || die "warm-up of $id failed"
done

say "== load: wrk -t1 -c$CONNECTIONS -d${DURATION}s$([[ -z $H2LOAD ]] || echo ", h2load -c$H2_CLIENTS -m$H2_STREAMS -D $DURATION"), $REPS interleaved repetitions"
for ((rep = 1; rep <= REPS; rep++)); do
    for id in "${CASES[@]}"; do
        run_case "$id" "$rep"
    done
done

# ---------------------------------------------------------------- idle connections

hold_connections() { # port path count: opens them, sends one request on each, keeps them idle
    (
        for ((i = 0; i < $3; i++)); do
            exec {fd}<>"/dev/tcp/127.0.0.1/$1" || break
            printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&"$fd"
        done
        exec sleep 120
    ) >/dev/null 2>&1 &
    HOLD_PID=$!
}

IDLE_RESULTS="$TMP/idle.tsv"
: >"$IDLE_RESULTS"
idle_check() { # name pid port path: appends "name established rss_before_kb rss_kb hwm_kb"
    local before established=0 i
    before=$(vm_kb "$2" VmRSS)
    hold_connections "$3" "$4" "$IDLE_CONNECTIONS"
    for ((i = 0; i < 200; i++)); do # up to 20 s: bash opens them one by one
        established=$("$SS" -Htn state established "sport = :$3" | wc -l)
        ((established >= IDLE_CONNECTIONS)) && break
        sleep 0.1
    done
    sleep 1 # let the proxy answer the last requests
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$established" "$before" "$(vm_kb "$2" VmRSS)" "$(vm_kb "$2" VmHWM)" \
        >>"$IDLE_RESULTS"
    stop_pid "$HOLD_PID"
    HOLD_PID=""
}

say "== memory with $IDLE_CONNECTIONS idle keep-alive connections (fresh processes)"
start_warden
idle_check warden "$WARDEN_PID" "$PORT_WARDEN" /public
stop_warden
stop_pid "$HAPROXY_PID"
start_haproxy
idle_check haproxy "$HAPROXY_PID" "$PORT_HAPROXY" /public
if [[ -n $NGINX ]]; then
    stop_pid "$NGINX_PID"
    start_nginx
    idle_check nginx "$NGINX_PID" "$PORT_NGINX" /public
fi

# ---------------------------------------------------------------- report

med() { # id column -> the median over the repetitions
    awk -F'\t' -v id="$1" -v col="$2" '$1 == id && $col != "nan" && $col != "-" { print $col }' "$RESULTS" |
        sort -g | awk '{ a[NR] = $1 } END {
            if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
verdict() { # value op limit -> met / MISSED
    awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN {
        if (v == "n/a" || v == "nan") { print "n/a"; exit }
        ok = (op == ">=") ? (v + 0 >= l + 0) : (v + 0 <= l + 0); print ok ? "met" : "MISSED" }'
}

report() {
    local id
    say ""
    say "warden load benchmark, $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname)"
    say "  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $CORES cores, $(uname -r)"
    say "  warden $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (+ uncommitted changes)'), $("$HAPROXY" -v | head -1 | cut -d' ' -f1-3)$([[ -z $NGINX ]] || echo ", $("$NGINX" -v 2>&1 | cut -d' ' -f3)"), $("$WRK" -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    say "  wrk -t1 -c$CONNECTIONS -d${DURATION}s$([[ -z $H2LOAD ]] || echo " and h2load -c$H2_CLIENTS -m$H2_STREAMS") on core $LOAD_CORE with the upstream"
    say "  proxies on core(s) $PROXY_CORE: WORKERS=$WORKERS (warden workers = $WORKERS, HAProxy nbthread $WORKERS;" \
        "$([[ -z $NGINX ]] || echo "nginx one process, as master_process off ignores worker_processes; ")the floor one thread)"
    [[ -z $CORES_WARNING ]] || say "  !! $CORES_WARNING"
    if has_case haproxy-tls || has_case warden-tls || has_case haproxy-handshake || has_case warden-handshake; then
        say "  TLS: one ECDSA P-256 certificate for both, TLS 1.3; handshake cases: wrk with Connection: close and" \
            "no session resumption (wrk alone resumed $WRK_RESUMES), so each request is TCP connect + full handshake + one request"
    fi
    say "  medians of $REPS interleaved repetitions; pools of $TOKENS RS256/ES256 and $HS256_TOKENS HS256 tokens: warden verifies each token once (fresh process per run), HAProxy cycles its pool"
    say ""
    printf '%-30s %10s %8s %8s %11s %6s %9s %7s %7s\n' case "req/s" "p50 ms" "p99 ms" "CPU us/req" "core%" "peak RSS" "window" "cache"
    for id in "${CASES[@]}"; do
        local rss
        rss=$(med "$id" 8)
        printf '%-30s %10.0f %8.2f %8.2f %11s %6s %9s %6.1fs %7s\n' "${CASE_LABEL[$id]}" "$(med "$id" 3)" \
            "$(awk -v v="$(med "$id" 4)" 'BEGIN{print v/1000}')" "$(awk -v v="$(med "$id" 5)" 'BEGIN{print v/1000}')" \
            "$(med "$id" 6)" "$(med "$id" 7)" \
            "$(awk -v v="$rss" 'BEGIN { if (v == "nan") print "-"; else printf "%.1f MiB", v / 1024 }')" \
            "$(med "$id" 9)" "$(awk -v v="$(med "$id" 10)" 'BEGIN { if (v == "nan") print "-"; else printf "%s%% hit", v }')"
    done
    if has_case haproxy-h2 || has_case warden-h2; then
        say "  h2c rows: h2load reports no percentiles, so their p50 column is the mean latency and their p99 column the maximum"
    fi
    if has_case haproxy-handshake || has_case warden-handshake; then
        say "  handshake rows: req/s = full TLS handshakes/s, CPU us/req = CPU per handshake (with its one request)"
    fi
    if awk -F'\t' '$11 != 0 || $12 != 0 { bad = 1 } END { exit !bad }' "$RESULTS"; then
        say "  !! some runs had non-2xx answers or socket errors: see $RESULTS (KEEP_TMP=1 keeps it)"
    fi
    say ""
    say "memory with $IDLE_CONNECTIONS idle keep-alive connections (one request each, then idle):"
    local name est before rss hwm
    while IFS=$'\t' read -r name est before rss hwm; do
        printf '  %-8s %5d connections open   RSS %6.1f MiB (%.1f MiB before)   peak %.1f MiB\n' \
            "$name" "$est" "$(awk -v v="$rss" 'BEGIN{print v/1024}')" "$(awk -v v="$before" 'BEGIN{print v/1024}')" \
            "$(awk -v v="$hwm" 'BEGIN{print v/1024}')"
    done <"$IDLE_RESULTS"

    local w_pub h_pub d_rps
    w_pub=$(med warden-public 3)
    h_pub=$(med haproxy-plain 3)
    d_rps=$(med direct 3)
    say ""
    say "ratios (throughput ratio = req/s of the first over the second; CPU ratio = CPU us/req of the first over the second)"
    if has_case warden-public && has_case direct; then
        printf '  %-44s %6s x throughput   p50 +%.2f ms\n' "warden public vs direct" "$(ratio "$w_pub" "$d_rps")" \
            "$(awk -v a="$(med warden-public 4)" -v b="$(med direct 4)" 'BEGIN{print (a-b)/1000}')"
    fi
    local pair a b
    for pair in warden-public:haproxy-plain warden-public:nginx-plain warden-public:floor \
        floor:haproxy-plain warden-hs256:haproxy-hs256 \
        warden-rs256:haproxy-rs256 warden-es256:haproxy-es256; do
        a=${pair%%:*}
        b=${pair##*:}
        if ! has_case "$a" || ! has_case "$b"; then continue; fi
        printf '  %-44s %6s x throughput   %6s x CPU/req   %6s x p99\n' "${CASE_LABEL[$a]} vs ${CASE_LABEL[$b]}" \
            "$(ratio "$(med "$a" 3)" "$(med "$b" 3)")" "$(ratio "$(med "$a" 6)" "$(med "$b" 6)")" \
            "$(ratio "$(med "$a" 5)" "$(med "$b" 5)")"
    done
    local label
    for pair in "warden-tls:haproxy-tls:warden TLS vs HAProxy TLS (keep-alive)" \
        "warden-handshake:haproxy-handshake:warden vs HAProxy, TLS handshakes" \
        "warden-tls:warden-public:warden TLS vs warden plain (keep-alive)" \
        "haproxy-tls:haproxy-plain:HAProxy TLS vs HAProxy plain (keep-alive)"; do
        IFS=: read -r a b label <<<"$pair"
        if ! has_case "$a" || ! has_case "$b"; then continue; fi
        printf '  %-44s %6s x throughput   %6s x CPU/req   %6s x p99\n' "$label" \
            "$(ratio "$(med "$a" 3)" "$(med "$b" 3)")" "$(ratio "$(med "$a" 6)" "$(med "$b" 6)")" \
            "$(ratio "$(med "$a" 5)" "$(med "$b" 5)")"
    done
    if has_case warden-h2 && has_case haproxy-h2; then
        printf '  %-44s %6s x throughput   %6s x CPU/req   %6s x mean latency   %6s x max\n' \
            "warden h2c vs HAProxy h2c (h2load)" "$(ratio "$(med warden-h2 3)" "$(med haproxy-h2 3)")" \
            "$(ratio "$(med warden-h2 6)" "$(med haproxy-h2 6)")" "$(ratio "$(med warden-h2 4)" "$(med haproxy-h2 4)")" \
            "$(ratio "$(med warden-h2 5)" "$(med haproxy-h2 5)")"
    fi
    if has_case warden-es256 && has_case warden-public; then
        printf '  %-44s %+6.2f us CPU/req (warden jwt ES256 distinct minus warden public)\n' "JWT route overhead" \
            "$(awk -v a="$(med warden-es256 6)" -v b="$(med warden-public 6)" 'BEGIN { print a - b }')"
    fi
    has_case warden-cached && printf '  %-44s %6s x throughput   %6s x CPU/req\n' "warden jwt repeated (cache) vs warden public" \
        "$(ratio "$(med warden-cached 3)" "$w_pub")" "$(ratio "$(med warden-cached 6)" "$(med warden-public 6)")"

    if has_case warden-limited; then
        printf '  %-44s %6s x throughput   %+6.2f us CPU/req\n' "warden public + rate limit vs warden public" \
            "$(ratio "$(med warden-limited 3)" "$w_pub")" \
            "$(awk -v a="$(med warden-limited 6)" -v b="$(med warden-public 6)" 'BEGIN { print a - b }')"
    fi
    if has_case warden-jwe && has_case warden-es256; then
        printf '  %-44s %6s x throughput   %6s x CPU/req\n' "warden distinct ES256: encrypted vs signed only" \
            "$(ratio "$(med warden-jwe 3)" "$(med warden-es256 3)")" \
            "$(ratio "$(med warden-jwe 6)" "$(med warden-es256 6)")"
    fi
    if has_case warden-jwe-cached && has_case warden-cached; then
        printf '  %-44s %6s x throughput   %6s x CPU/req\n' "warden repeated token: encrypted vs signed only" \
            "$(ratio "$(med warden-jwe-cached 3)" "$(med warden-cached 3)")" \
            "$(ratio "$(med warden-jwe-cached 6)" "$(med warden-cached 6)")"
    fi
    if has_case warden-minted && has_case warden-cached; then
        printf '  %-44s %6s x throughput   %6s x CPU/req\n' "warden jwt repeated: upstream token vs none" \
            "$(ratio "$(med warden-minted 3)" "$(med warden-cached 3)")" \
            "$(ratio "$(med warden-minted 6)" "$(med warden-cached 6)")"
    fi
    if has_case warden-redis-cached && has_case warden-cached; then
        printf '  %-44s %6s x throughput   %6s x CPU/req\n' "warden jwt repeated: redis vs memory backend" \
            "$(ratio "$(med warden-redis-cached 3)" "$(med warden-cached 3)")" \
            "$(ratio "$(med warden-redis-cached 6)" "$(med warden-cached 6)")"
    fi
    if has_case warden-redis-limited && has_case warden-limited; then
        printf '  %-44s %6s x throughput   %+6.2f us warden CPU/req, %s us redis-server CPU/req, p50 +%.3f ms\n' \
            "warden rate limit: redis vs memory backend" \
            "$(ratio "$(med warden-redis-limited 3)" "$(med warden-limited 3)")" \
            "$(awk -v a="$(med warden-redis-limited 6)" -v b="$(med warden-limited 6)" 'BEGIN { print a - b }')" \
            "$(med warden-redis-limited 14)" \
            "$(awk -v a="$(med warden-redis-limited 4)" -v b="$(med warden-limited 4)" 'BEGIN { print (a - b) / 1000 }')"
    fi

    say ""
    say "targets (issue 15, $CONNECTIONS connections, WORKERS=$WORKERS):"
    local r peak idle_rss
    r=$(ratio "$(med warden-public 6)" "$(med haproxy-plain 6)")
    printf '  %-66s %6s   %s\n' "public: CPU/req <= 1.0x HAProxy plain's" "$r" "$(verdict "$r" '<=' 1)"
    printf '  %-66s %6s   %s\n' "  stretch: <= 0.85x" "$r" "$(verdict "$r" '<=' 0.85)"
    r=$(ratio "$w_pub" "$h_pub")
    printf '  %-66s %6s   %s\n' "public: >= 1.0x HAProxy plain throughput" "$r" "$(verdict "$r" '>=' 1.0)"
    local alg want
    for alg in hs256:1.2 rs256:1.1 es256:1.0; do
        want=${alg#*:}
        alg=${alg%:*}
        r=$(ratio "$(med "warden-$alg" 3)" "$(med "haproxy-$alg" 3)")
        printf '  %-66s %6s   %s\n' "distinct ${alg^^} tokens: >= ${want}x HAProxy jwt_verify throughput" "$r" \
            "$(verdict "$r" '>=' "$want")"
    done
    r=$(ratio "$(med warden-cached 3)" "$w_pub")
    printf '  %-66s %6s   %s\n' "repeated token: >= 0.9x warden public throughput" "$r" "$(verdict "$r" '>=' 0.9)"
    r=$(ratio "$(med warden-tls 3)" "$(med haproxy-tls 3)")
    printf '  %-66s %6s   %s\n' "HTTPS keep-alive: >= 1.0x HAProxy throughput" "$r" "$(verdict "$r" '>=' 1.0)"
    r=$(ratio "$(med warden-handshake 3)" "$(med haproxy-handshake 3)")
    printf '  %-66s %6s   %s\n' "TLS full handshakes/s: >= 1.2x HAProxy" "$r" "$(verdict "$r" '>=' 1.2)"
    # wrk's side of a handshake usually costs more than either server's, so
    # the load core can cap both rates alike: the CPU figure is the capacity.
    r=$(ratio "$(med haproxy-handshake 6)" "$(med warden-handshake 6)")
    printf '  %-66s %6s   %s\n' "  the same from CPU per handshake (HAProxy's over warden's)" "$r" "$(verdict "$r" '>=' 1.2)"
    r=$(ratio "$(med warden-h2 3)" "$(med haproxy-h2 3)")
    printf '  %-66s %6s   %s\n' "HTTP/2 (h2load h2c, -c$H2_CLIENTS -m$H2_STREAMS): >= 1.0x HAProxy throughput" "$r" \
        "$(verdict "$r" '>=' 1.0)"
    for pair in warden-public:haproxy-plain warden-hs256:haproxy-hs256 warden-rs256:haproxy-rs256 \
        warden-es256:haproxy-es256 warden-cached:haproxy-es256 warden-tls:haproxy-tls \
        warden-handshake:haproxy-handshake; do
        a=${pair%%:*}
        b=${pair##*:}
        if ! has_case "$a" || ! has_case "$b"; then continue; fi
        r=$(ratio "$(med "$a" 5)" "$(med "$b" 5)")
        printf '  %-66s %6s   %s\n' "p99: ${CASE_LABEL[$a]} <= ${CASE_LABEL[$b]} (ratio)" "$r" "$(verdict "$r" '<=' 1)"
    done
    local peak_case
    read -r peak peak_case < <(awk -F'\t' '$1 ~ /^warden-/ && $8 > m { m = $8; c = $1 } END { printf "%.1f %s\n", m / 1024, c }' "$RESULTS")
    printf '  %-66s %6s   %s\n' "peak RSS at $CONNECTIONS connections <= 32 MiB (max of all runs: $peak_case)" "$peak" \
        "$(verdict "$peak" '<=' 32)"
    r=$(awk -v v="$(med warden-public 8)" 'BEGIN { printf "%.1f", v / 1024 }')
    printf '  %-66s %6s   %s\n' "  the same, public route only" "$r" "$(verdict "$r" '<=' 32)"
    idle_rss=$(awk -F'\t' '$1 == "warden" { printf "%.1f", ($4 > $5 ? $4 : $5) / 1024 }' "$IDLE_RESULTS")
    printf '  %-66s %6s   %s\n' "$IDLE_CONNECTIONS idle keep-alive connections: <= 64 MiB (peak, MiB)" "$idle_rss" \
        "$(verdict "$idle_rss" '<=' 64)"
    say "  earlier targets:"
    if has_case warden-limited; then
        r=$(awk -v a="$(med warden-limited 6)" -v b="$(med warden-public 6)" 'BEGIN { printf "%.2f", a - b }')
        printf '  %-66s %6s   %s\n' "rate limit (memory): <= 1 us more CPU/req than the same route without" "$r" \
            "$(verdict "$r" '<=' 1)"
    fi
    if has_case warden-minted && has_case warden-cached; then
        r=$(ratio "$(med warden-minted 6)" "$(med warden-cached 6)")
        printf '  %-66s %6s   %s\n' "upstream token, repeated caller: <= 1.1x the same route's CPU/req" "$r" \
            "$(verdict "$r" '<=' 1.1)"
    fi
    if has_case warden-redis-cached && has_case warden-cached; then
        r=$(ratio "$(med warden-redis-cached 6)" "$(med warden-cached 6)")
        printf '  %-66s %6s   %s\n' "jwt route, redis backend: <= 1.1x the memory backend's CPU/req" "$r" \
            "$(verdict "$r" '<=' 1.1)"
    fi
    say "  route table (10,000 vs 10 routes): not measured here; see cargo bench --bench hot_path"
}

mkdir -p "$TARGET_DIR/load-bench"
REPORT="$TARGET_DIR/load-bench/report-$(date -u +%Y%m%dT%H%M%SZ).txt"
report | tee "$REPORT"
cp "$RESULTS" "${REPORT%.txt}.tsv"
say ""
say "report: $REPORT (raw per-run figures: ${REPORT%.txt}.tsv)"
