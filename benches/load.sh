#!/usr/bin/env bash
# The load benchmark: warden against HAProxy (and nginx when present), in one run.
#
#   apt-get install wrk haproxy        # once; nginx is optional
#   bash benches/load.sh               # full run (about 9 minutes + the release build)
#   QUICK=1 bash benches/load.sh       # smoke test: DURATION=2 REPS=1 TOKENS=5000
#
# What it does (docs/performance.md explains how to read the output):
#   - builds warden and the examples bench_upstream and mint_tokens in release;
#   - makes RS256/ES256 keys (`warden keygen`) and a 64-character HS256 secret
#     in a temporary directory, and mints pools of distinct tokens;
#   - starts the static upstream on the load core, and warden (one tokio
#     worker), HAProxy (nbthread 1) and nginx (one worker, if installed) on
#     the proxy core;
#   - checks that each answers 200 to a valid token and 401 to a bad one;
#   - runs `wrk -t1 -c64` on the load core against each case, REPS times,
#     interleaved, and reports medians: requests/s, p50/p99 latency, the
#     proxy's CPU per request (utime+stime from /proc/PID/stat), its peak RSS
#     (VmHWM), and the ratios to direct and to HAProxy;
#   - measures warden's memory with 1,000 idle keep-alive connections;
#   - when redis-server is installed, also runs warden with
#     `[shared_state] backend = "redis"` (a redis-server on the load core)
#     and a rate-limited route, and reports what shared state and rate
#     limits cost per request against the same routes in memory.
# It installs nothing, and stops every process it started on exit.
#
# Settings (environment):
#   DURATION=10        seconds per wrk run
#   REPS=3             interleaved repetitions; the report shows medians
#   CONNECTIONS=64     wrk connections
#   TOKENS=100000      distinct tokens per algorithm (RS256 and ES256)
#   HS256_TOKENS=4*TOKENS  distinct HS256 tokens (cheap to sign; HS256 runs fastest)
#   IDLE_CONNECTIONS=1000  idle keep-alive connections for the memory check
#   BASE_PORT=28100    ten consecutive ports from here on 127.0.0.1, below the ephemeral range
#   PROXY_CORE=0 LOAD_CORE=1   the cores to pin the proxies and wrk+upstream to
#   SKIP_BUILD=1       use the binaries already built
#   KEEP_TMP=1         keep the temporary directory (configs, logs, raw wrk output)
#   HAPROXY_TEMPLATE=  the HAProxy peer config (default: ../shared/bench/haproxy-peer.cfg.in
#                      if it exists, else benches/haproxy-peer.cfg.in)
#   QUICK=1            DURATION=2 REPS=1 TOKENS=5000 unless set explicitly
#   ONLY="id id ..."   run only these cases (ids as in the report's tsv), e.g.
#                      ONLY="warden-public warden-limited warden-cached warden-redis-cached"
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
PROXY_CORE=${PROXY_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}

say() { printf '%s\n' "$*"; }
die() {
    printf 'load.sh: %s\n' "$*" >&2
    exit 1
}

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
REDIS_SERVER=""
[[ "${NO_REDIS:-0}" == 1 ]] || REDIS_SERVER=$(find_tool redis-server) || REDIS_SERVER=""

CORES=$(nproc)
if ((CORES < 2)); then
    say "warning: $CORES core: the proxy and the load generator share it; ratios mean little"
    PROXY_CORE=0
    LOAD_CORE=0
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
# Outside the ephemeral range, or an outgoing connection (wrk, the proxies'
# upstream connections) could hold one of them when warden restarts.
read -r EPHEMERAL_LOW EPHEMERAL_HIGH </proc/sys/net/ipv4/ip_local_port_range
if ((BASE_PORT + 9 >= EPHEMERAL_LOW && BASE_PORT <= EPHEMERAL_HIGH)); then
    die "ports $BASE_PORT-$((BASE_PORT + 9)) are in the ephemeral range $EPHEMERAL_LOW-$EPHEMERAL_HIGH; set BASE_PORT below $((EPHEMERAL_LOW - 10))"
fi
for port in $(seq "$BASE_PORT" $((BASE_PORT + 9))); do
    if [[ -n $("$SS" -Htln "sport = :$port" 2>/dev/null) ]]; then
        die "port $port is in use; set BASE_PORT to the first of 10 free ports"
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

# id -> proxy process, URL, token pool (distinct tokens) or one token (repeated)
declare -A CASE_PROXY CASE_URL CASE_POOL CASE_TOKEN CASE_LABEL
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
add_case direct none "http://127.0.0.1:$PORT_UPSTREAM/public" "direct to upstream"
add_case haproxy-plain haproxy "http://127.0.0.1:$PORT_HAPROXY/public" "HAProxy plain"
if [[ -n $NGINX ]]; then
    add_case nginx-plain nginx "http://127.0.0.1:$PORT_NGINX/public" "nginx plain"
fi
# The floor: a bare hyper proxy (no routing, auth, logs or metrics) on the
# same runtime as warden, so the report shows what warden's own work costs.
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
say "warden load benchmark: ${#CASES[@]} cases x $REPS reps x ${DURATION}s at $CONNECTIONS connections" \
    "(tokens: $TOKENS RS256/ES256, $HS256_TOKENS HS256)"
say "estimated time: about $((total_secs / 60)) min $((total_secs % 60)) s, plus the release build if it is not up to date"
[[ -n $NGINX ]] || say "nginx not found: the nginx plain-proxy case is skipped (optional)"

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
# cold case never hits it, and VmHWM is the peak of that run alone.
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

"$MINT" --hs256-secret "$TMP/keys/hs256.secret" --rs256-key "$TMP/keys/rs256.pem" \
    --es256-key "$TMP/keys/es256.pem" --jwe-key "$TMP/keys/enc.pem" --out "$TMP/tokens" \
    --count "$TOKENS" --hs256-count "$HS256_TOKENS"
REPEATED_TOKEN=$(<"$TMP/tokens/repeated.token")
CASE_TOKEN[warden-cached]=$REPEATED_TOKEN
CASE_TOKEN[warden-redis-cached]=$REPEATED_TOKEN
CASE_TOKEN[warden-minted]=$REPEATED_TOKEN
REPEATED_JWE=$(<"$TMP/tokens/repeated-jwe.token")
CASE_TOKEN[warden-jwe-cached]=$REPEATED_JWE

cat >"$TMP/warden.toml" <<EOF
# Written by benches/load.sh.
[server]
listen = "127.0.0.1:$PORT_WARDEN"
admin_listen = "127.0.0.1:$PORT_ADMIN"
shutdown_grace = "1s"

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
"$WARDEN" check --config "$TMP/warden.toml" >/dev/null
{
    cat "$TMP/warden.toml"
    cat <<EOF

[shared_state]
backend = "redis"
url_env = "WARDEN_REDIS_URL"
key_prefix = "bench:"
EOF
} >"$TMP/warden-redis.toml"
"$WARDEN" check --config "$TMP/warden-redis.toml" >/dev/null

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
        "$CURL" -s -o /dev/null --max-time 5 -w '%{http_code}' -H "Authorization: Bearer $2" "$1"
    else
        "$CURL" -s -o /dev/null --max-time 5 -w '%{http_code}' "$1"
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
    "$CURL" -s --max-time 5 "http://127.0.0.1:$PORT_ADMIN/metrics" | grep -q '^warden_shared_state_up 1' ||
        die "warden with the redis backend does not report warden_shared_state_up 1"
    stop_warden
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

run_case() { # id rep
    local id=$1 rep=$2 proxy=${CASE_PROXY[$1]} url=${CASE_URL[$1]} pool=${CASE_POOL[$1]}
    local pid="" out="$TMP/wrk-$1-$2.txt"
    case $proxy in
    warden)
        start_warden
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
    local args=(-t1 "-c$CONNECTIONS" "-d${DURATION}s" --latency)
    if [[ -n $pool ]]; then
        local mode=once
        [[ $proxy == warden ]] || mode=cycle
        args+=(-s "$TMP/pool.lua" "$url" -- "$TMP/tokens/$pool.tokens" "$mode")
    elif [[ -n "${CASE_TOKEN[$id]:-}" ]]; then
        args+=(-s "$TMP/stats.lua" -H "Authorization: Bearer ${CASE_TOKEN[$id]}" "$url")
    else
        args+=(-s "$TMP/stats.lua" "$url")
    fi
    local cpu0=0 cpu1=0 redis0=0 redis1=0
    [[ -z $pid ]] || cpu0=$(cpu_ticks "$pid")
    [[ -z $REDIS_PID ]] || redis0=$(cpu_ticks "$REDIS_PID")
    "$TASKSET" -c "$LOAD_CORE" "$WRK" "${args[@]}" >"$out" 2>&1 || die "wrk failed: $(tail -5 "$out")"
    [[ -z $pid ]] || cpu1=$(cpu_ticks "$pid")
    [[ -z $REDIS_PID ]] || redis1=$(cpu_ticks "$REDIS_PID")

    local line requests=0 seconds=1 rps=0 p50_us=0 p99_us=0 non2xx=0 sockerr=0 exhausted=no
    line=$(grep '^BENCH ' "$out") || die "no summary from wrk: $(tail -5 "$out")"
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
    if [[ $proxy == warden* && $id != warden-public && $id != *limited ]]; then
        read -r hits misses < <(warden_cache_counts)
        hit_pct=$(awk -v h="$hits" -v m="$misses" 'BEGIN { printf "%.1f", (h + m > 0 ? 100 * h / (h + m) : 0) }')
    fi
    [[ $proxy != warden* ]] || stop_warden

    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$rep" "$rps" "$p50_us" "$p99_us" \
        "$cpu_us" "$core_pct" "$rss_kb" "$seconds" "$hit_pct" "$non2xx" "$sockerr" "$exhausted" "$redis_us" >>"$RESULTS"
    printf '  rep %d  %-28s %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  cpu %7s us/req  core %3s%%  %5.1fs%s%s\n' \
        "$rep" "${CASE_LABEL[$id]}" "$rps" "$(awk -v v="$p50_us" 'BEGIN{print v/1000}')" \
        "$(awk -v v="$p99_us" 'BEGIN{print v/1000}')" "$cpu_us" "$core_pct" "$seconds" \
        "$([[ $exhausted == yes ]] && echo ' (pool used up)')" \
        "$([[ $non2xx == 0 && $sockerr == 0 ]] || echo "  !! $non2xx non-2xx, $sockerr socket errors")"
    sleep 1
}

say "== warm-up: 1 s each of the long-running processes"
for id in direct haproxy-plain haproxy-hs256 haproxy-rs256 haproxy-es256 nginx-plain floor; do
    has_case "$id" || continue
    warm=(-s "$TMP/stats.lua" "${CASE_URL[$id]}")
    [[ -z ${CASE_POOL[$id]} ]] || warm=(-s "$TMP/pool.lua" "${CASE_URL[$id]}" -- "$TMP/tokens/${CASE_POOL[$id]}.tokens" cycle)
    "$TASKSET" -c "$LOAD_CORE" "$WRK" -t1 "-c$CONNECTIONS" -d1s "${warm[@]}" >/dev/null 2>&1 || die "warm-up of $id failed"
done

say "== load: wrk -t1 -c$CONNECTIONS -d${DURATION}s, $REPS interleaved repetitions"
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
    say "  wrk -t1 -c$CONNECTIONS -d${DURATION}s on core $LOAD_CORE with the upstream; proxy on core $PROXY_CORE, single-threaded"
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
    printf '  %-44s %6s x throughput   p50 +%.2f ms\n' "warden public vs direct" "$(ratio "$w_pub" "$d_rps")" \
        "$(awk -v a="$(med warden-public 4)" -v b="$(med direct 4)" 'BEGIN{print (a-b)/1000}')"
    local pair a b
    for pair in warden-public:haproxy-plain warden-public:nginx-plain warden-public:floor \
        floor:haproxy-plain warden-hs256:haproxy-hs256 \
        warden-rs256:haproxy-rs256 warden-es256:haproxy-es256; do
        a=${pair%%:*}
        b=${pair##*:}
        has_case "$a" && has_case "$b" || continue
        printf '  %-44s %6s x throughput   %6s x CPU/req   %6s x p99\n' "${CASE_LABEL[$a]} vs ${CASE_LABEL[$b]}" \
            "$(ratio "$(med "$a" 3)" "$(med "$b" 3)")" "$(ratio "$(med "$a" 6)" "$(med "$b" 6)")" \
            "$(ratio "$(med "$a" 5)" "$(med "$b" 5)")"
    done
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
    say "targets (issue 7, $CONNECTIONS connections):"
    local r peak idle_rss
    r=$(ratio "$w_pub" "$h_pub")
    printf '  %-66s %6s   %s\n' "public: >= 1.2x HAProxy plain throughput" "$r" "$(verdict "$r" '>=' 1.2)"
    r=$(ratio "$(med warden-public 6)" "$(med haproxy-plain 6)")
    printf '  %-66s %6s   %s\n' "public: CPU/req <= HAProxy plain's (ratio <= 1)" "$r" "$(verdict "$r" '<=' 1)"
    r=$(ratio "$(med warden-cached 3)" "$w_pub")
    printf '  %-66s %6s   %s\n' "repeated token: >= 0.9x warden public throughput" "$r" "$(verdict "$r" '>=' 0.9)"
    local alg want
    for alg in es256:2.0 rs256:1.5 hs256:1.3; do
        want=${alg#*:}
        alg=${alg%:*}
        r=$(ratio "$(med "warden-$alg" 3)" "$(med "haproxy-$alg" 3)")
        printf '  %-66s %6s   %s\n' "distinct ${alg^^} tokens: >= ${want}x HAProxy jwt_verify throughput" "$r" \
            "$(verdict "$r" '>=' "$want")"
    done
    for pair in warden-public:haproxy-plain warden-hs256:haproxy-hs256 warden-rs256:haproxy-rs256 \
        warden-es256:haproxy-es256 warden-cached:haproxy-es256; do
        a=${pair%%:*}
        b=${pair##*:}
        has_case "$a" && has_case "$b" || continue
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
