#!/usr/bin/env bash
# Loads credd and a bare tonic + tonic-health server (examples/bare_health.rs) with
# h2load (Debian nghttp2-client) in one run, alternating, and prints each call's
# median req/s and p99 over RUNS runs and its ratio to the bare Health/Check.
#
#   scripts/bench.sh                      # SQLite
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench scripts/bench.sh
#
# Knobs (environment): RUNS (3), SECONDS_EACH (5), CONNECTIONS (4), STREAMS (16 per
# connection: 64 in flight), CASES (space-separated subset of the names below),
# CREDD_BIN (the credd binary to load; default target/release/credd, so that an
# older build can be compared with the same fixtures and load), PIN (1: the servers on CPU 0 and h2load on CPU 1, which makes runs comparable on a
# 2-core machine; 0: no pinning), RPS (unset: each run as fast as the server answers,
# 64 in flight; a number: that many requests per second offered to each server, so
# that the p99 column compares latency at the same load rather than queueing at
# saturation).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SECONDS_EACH=${SECONDS_EACH:-5}
CONNECTIONS=${CONNECTIONS:-4}
STREAMS=${STREAMS:-16}
CASES=${CASES:-"health verify_generated verify_imported get_org_by_domain get_org_by_client_id check_redirect resolve_login"}
PIN=${PIN:-1}
RPS=${RPS:-}
BARE_PORT=${BARE_PORT:-50061}
CREDD_PORT=${CREDD_PORT:-50062}
TOKEN=bench-bootstrap-token-0123456789abcdef0123

command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
cargo build --release --quiet --bins --examples
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

server_cpu=(); load_cpu=()
if [ "$PIN" = 1 ]; then server_cpu=(taskset -c 0); load_cpu=(taskset -c 1); fi
"${server_cpu[@]}" target/release/examples/bare_health "127.0.0.1:$BARE_PORT" >/dev/null &
pids+=($!)
# The verify-imported case needs a cache off to be cold; every other case is the
# same with it on or off (generated secrets are never cached).
CREDD_DATABASE_URL=${DATABASE_URL:-"sqlite://$work/bench.db?mode=rwc"} \
CREDD_LISTEN="127.0.0.1:$CREDD_PORT" CREDD_BOOTSTRAP_TOKEN=$TOKEN \
CREDD_VERIFY_CACHE_TTL=${CREDD_VERIFY_CACHE_TTL:-0} CREDD_VERIFY_THROTTLE_RATE=0 \
  "${server_cpu[@]}" "${CREDD_BIN:-target/release/credd}" serve 2>/dev/null &
pids+=($!)
credd_pid=$!
for _ in $(seq 1 100); do
  target/release/credd-bench --addr "127.0.0.1:$CREDD_PORT" --token "$TOKEN" --rpc frames \
    --out "$work/frames" >/dev/null 2>&1 && break
  sleep 0.2
done
[ -f "$work/frames/health.bin" ] || { echo "credd did not start" >&2; exit 1; }

path_of() {
  case "$1" in
    health) echo /grpc.health.v1.Health/Check ;;
    verify_*) echo /credd.v1.ClientSecrets/VerifyClientSecret ;;
    get_org_*) echo /credd.v1.Orgs/GetOrg ;;
    check_redirect) echo /credd.v1.AppRegistrations/CheckRedirectUri ;;
    resolve_login) echo /credd.v1.Gateway/ResolveLogin ;;
  esac
}

# One h2load run: prints "req/s p99_ms".
load() {
  local port=$1 case=$2 log="$work/h2load.log"
  rm -f "$log"
  local rate=()
  if [ -n "$RPS" ]; then rate=(--rps=$((RPS / CONNECTIONS))); fi
  "${load_cpu[@]}" h2load -D "$SECONDS_EACH" -c "$CONNECTIONS" -m "$STREAMS" -t 1 "${rate[@]}" \
    -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $TOKEN" \
    -d "$work/frames/$case.bin" --log-file="$log" \
    "http://127.0.0.1:$port$(path_of "$case")" >"$work/h2load.out" 2>&1
  python3 - "$log" "$SECONDS_EACH" <<'PY'
import sys
rows = [l.split('\t') for l in open(sys.argv[1]) if l.strip()]
ok = sorted(int(r[2]) for r in rows if r[1] == '200')
p99 = ok[max(0, int(len(ok) * 0.99) - 1)] / 1000 if ok else 0
print(f"{len(ok) / float(sys.argv[2]):.0f} {p99:.2f}")
PY
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "h2load: $CONNECTIONS connections x $STREAMS streams, ${SECONDS_EACH}s per run, median of $RUNS runs, pinned: $PIN, offered: ${RPS:-as fast as answered} req/s"
echo "database: ${DATABASE_URL:-SQLite}"
printf '%-22s %10s %8s %10s %8s %10s\n' call "req/s" "p99 ms" "bare req/s" "÷ bare" "p99 ÷ bare"
for case in $CASES; do
  credd_rps=(); credd_p99=(); bare_rps=(); bare_p99=()
  for _ in $(seq 1 "$RUNS"); do
    read -r r p < <(load "$BARE_PORT" health); bare_rps+=("$r"); bare_p99+=("$p")
    read -r r p < <(load "$CREDD_PORT" "$case"); credd_rps+=("$r"); credd_p99+=("$p")
  done
  c=$(printf '%s\n' "${credd_rps[@]}" | median); cp=$(printf '%s\n' "${credd_p99[@]}" | median)
  b=$(printf '%s\n' "${bare_rps[@]}" | median); bp=$(printf '%s\n' "${bare_p99[@]}" | median)
  printf '%-22s %10s %8s %10s %8.2f %10.2f\n' "$case" "$c" "$cp" "$b" \
    "$(echo "$c / $b" | bc -l)" "$(echo "$cp / $bp" | bc -l)"
done
rss=$(awk '/VmRSS/ {print $2}' "/proc/$credd_pid/status")
echo "credd resident memory after the runs: $((rss / 1024)) MiB"
