#!/usr/bin/env bash
# The failover drill (docs/RELIABILITY.md, "Failover"): a two-node PostgreSQL
# cluster managed by Patroni with etcd (Debian's packages, synchronous
# replication), HAProxy routing to the primary by Patroni's REST `/primary`
# check, two credd replicas behind it under mixed load (examples/failover_load.rs),
# and the primary killed -9 mid-run. Prints the figures.
#
#   tests/faults/failover.sh            # needs root (installs packages, runs as postgres)
#   DRILL_SECONDS=40 KILL_AFTER=12 tests/faults/failover.sh
#   DRILL_PROFILE=dev tests/faults/failover.sh   # the debug build `cargo test` made (CI)
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${DRILL_SECONDS:-40}
kill_after=${KILL_AFTER:-12}
dir=${DRILL_DIR:-/tmp/credd-failover}
pg_bin=/usr/lib/postgresql/$(ls /usr/lib/postgresql | sort -n | tail -n 1)/bin
token=drill-bootstrap-token-0123456789abcdef

need=()
for cmd in patroni etcd haproxy curl; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
python3 -c 'import etcd' 2>/dev/null || need+=(python3-etcd)
if ((${#need[@]})); then
  pkgs=()
  for n in "${need[@]}"; do case $n in etcd) pkgs+=(etcd-server) ;; *) pkgs+=("$n") ;; esac; done
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

cleanup() {
  set +e
  [ -n "${load_pid:-}" ] && kill "$load_pid" 2>/dev/null
  for p in "${credd_pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  pkill -f "patroni $dir/patroni" 2>/dev/null
  sleep 2
  pkill -f "$dir/pg[12]" 2>/dev/null
  [ -f "$dir/haproxy.pid" ] && kill "$(cat "$dir/haproxy.pid")" 2>/dev/null
  [ -f "$dir/etcd.pid" ] && kill "$(cat "$dir/etcd.pid")" 2>/dev/null
}
trap cleanup EXIT

rm -rf "$dir" && mkdir -p "$dir" && chown postgres "$dir"
echo "==> etcd on 127.0.0.1:2379"
etcd --name drill --data-dir "$dir/etcd" --enable-v2=true \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster drill=http://127.0.0.1:2380 >"$dir/etcd.log" 2>&1 &
echo $! >"$dir/etcd.pid"
for _ in $(seq 1 50); do curl -fs http://127.0.0.1:2379/health >/dev/null && break; sleep 0.2; done

for n in 1 2; do
  cat >"$dir/patroni$n.yml" <<YML
scope: credd-drill
name: pg$n
restapi:
  listen: 127.0.0.1:800$n
  connect_address: 127.0.0.1:800$n
etcd:
  host: 127.0.0.1:2379
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 5
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        synchronous_commit: "on"
        wal_level: replica
        max_wal_senders: 10
  initdb: [{encoding: UTF8}, {auth: trust}]
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication replicator 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:544$n
  connect_address: 127.0.0.1:544$n
  data_dir: $dir/pg$n
  bin_dir: $pg_bin
  pgpass: $dir/pgpass$n
  authentication:
    superuser: {username: postgres}
    replication: {username: replicator}
  parameters:
    unix_socket_directories: $dir
YML
done
chown postgres "$dir"/patroni*.yml
echo "==> Patroni: pg1 (5441), then pg2 (5442)"
runuser -u postgres -- patroni "$dir/patroni1.yml" >"$dir/patroni1.log" 2>&1 &
echo $! >"$dir/patroni1.pid"
for _ in $(seq 1 120); do curl -fs http://127.0.0.1:8001/primary >/dev/null && break; sleep 0.5; done
runuser -u postgres -- patroni "$dir/patroni2.yml" >"$dir/patroni2.log" 2>&1 &
echo $! >"$dir/patroni2.pid"
for _ in $(seq 1 120); do curl -fs http://127.0.0.1:8002/replica >/dev/null && break; sleep 0.5; done
# Synchronous replication: pg2 is the sync standby before the drill starts.
for _ in $(seq 1 60); do
  patronictl -c "$dir/patroni1.yml" list 2>/dev/null | grep -q "Sync Standby" && break
  sleep 0.5
done
patronictl -c "$dir/patroni1.yml" list

echo "==> HAProxy on 127.0.0.1:5440, to whichever node answers /primary"
cat >"$dir/haproxy.cfg" <<CFG
global
  maxconn 1000
  pidfile $dir/haproxy.pid
defaults
  mode tcp
  timeout connect 2s
  timeout client 30m
  timeout server 30m
  timeout check 1s
listen postgres
  bind 127.0.0.1:5440
  option httpchk GET /primary
  http-check expect status 200
  default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
  server pg1 127.0.0.1:5441 check port 8001
  server pg2 127.0.0.1:5442 check port 8002
CFG
haproxy -D -f "$dir/haproxy.cfg"
# HAProxy starts with every server up until its checks say otherwise: wait
# until what it routes to is the primary.
for _ in $(seq 1 60); do
  [ "$(psql -h 127.0.0.1 -p 5440 -U postgres -d postgres -tAc 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] &&
    [ "$(psql -h 127.0.0.1 -p 5440 -U postgres -d postgres -tAc 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] && break
  sleep 0.5
done
sleep 2
psql -h 127.0.0.1 -p 5440 -U postgres -d postgres -qc "CREATE DATABASE credd"

echo "==> two credd replicas (50061, 50062)"
if [ "${DRILL_PROFILE:-release}" = dev ]; then
  cargo build --quiet --bin credd --example failover_load
  bin=target/debug
else
  cargo build --release --quiet --bin credd --example failover_load
  bin=target/release
fi
credd_pids=()
for port in 50061 50062; do
  CREDD_DATABASE_URL=postgres://postgres@127.0.0.1:5440/credd CREDD_LISTEN=127.0.0.1:$port \
    CREDD_BOOTSTRAP_TOKEN=$token CREDD_LOG=warn \
    "$bin/credd" serve >"$dir/credd-$port.log" 2>&1 &
  credd_pids+=($!)
done
for port in 50061 50062; do
  for _ in $(seq 1 60); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.5
  done
done
sleep 2

echo "==> load for ${seconds}s; the primary is killed -9 after ${kill_after}s of it"
"$bin/examples/failover_load" "$token" "$seconds" 127.0.0.1:50061 127.0.0.1:50062 \
  >"$dir/load.out" 2>"$dir/load.err" &
load_pid=$!
for _ in $(seq 1 120); do grep -q '^ready' "$dir/load.out" 2>/dev/null && break; sleep 0.5; done
sleep "$kill_after"
primary=$(curl -fs http://127.0.0.1:8001/primary >/dev/null && echo 1 || echo 2)
postmaster=$(head -n 1 "$dir/pg$primary/postmaster.pid")
echo "killing the primary node pg$primary (Patroni and postmaster $postmaster, -9) at $(date +%T.%N | cut -c1-12)"
# The whole node goes: its Patroni cannot restart PostgreSQL in place, so the
# leader key expires and the synchronous standby is promoted.
pkill -9 -f "patroni $dir/patroni$primary.yml"
kill -9 "$postmaster"
wait "$load_pid" || { cat "$dir/load.err"; exit 1; }
load_pid=
patronictl -c "$dir/patroni1.yml" list || true

echo "==> figures"
cat "$dir/load.out"
for p in "${credd_pids[@]}"; do kill -0 "$p" || { echo "a credd replica exited"; exit 1; }; done
echo "credd_restarts 0"
figure() { awk -v k="$1" '$1 == k { print $2 }' "$dir/load.out"; }
failed=0
for key in acknowledged_writes_lost cached_verify_errors cached_verify_wrong_answers readiness_probes_failed; do
  if [ "$(figure "$key")" != 0 ]; then echo "FAIL: $key is $(figure "$key"), must be 0"; failed=1; fi
done
[ "$(figure writes_after_outage)" -gt 0 ] || { echo "FAIL: the writes never came back"; failed=1; }
exit "$failed"
