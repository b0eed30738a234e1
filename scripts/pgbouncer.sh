#!/usr/bin/env bash
# Starts a PgBouncer (Debian's package) in transaction mode on 127.0.0.1:${PGBOUNCER_PORT:-6432}
# in front of the PostgreSQL on 127.0.0.1:5432, passing every database name through
# and trusting every user, for the tests (CREDD_TEST_PGBOUNCER_URL) and for trying
# credd behind a pooler by hand. Nothing but `pool_mode = transaction` is tuned for
# credd: the tests prove that credd needs no other PgBouncer setting.
#   scripts/pgbouncer.sh          start (or report the one already running)
#   scripts/pgbouncer.sh stop
set -euo pipefail

port=${PGBOUNCER_PORT:-6432}
dir=${PGBOUNCER_DIR:-/tmp/credd-pgbouncer}

if [ "${1:-start}" = stop ]; then
  [ -f "$dir/pgbouncer.pid" ] && kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
  exit 0
fi

if ! command -v pgbouncer >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null
fi
if pg_isready -q -h 127.0.0.1 -p "$port"; then
  echo "pgbouncer: already answering on 127.0.0.1:$port"
  exit 0
fi

mkdir -p "$dir"
cat >"$dir/pgbouncer.ini" <<INI
[databases]
; One server connection for the test database credd_witness, so that a second
; client (the witness) shares credd's server connection: credd must leave it as
; it found it (tests/api/pooler.rs).
credd_witness = host=127.0.0.1 port=5432 dbname=credd_witness pool_size=1
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
pool_mode = transaction
; The tests start many servers over many databases at once: a small pool per
; database, a cap on all of them below PostgreSQL's max_connections (100), and
; idle server connections closed soon so that other databases get theirs.
max_client_conn = 5000
default_pool_size = 8
max_user_connections = 60
server_idle_timeout = 5
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
echo '"postgres" ""' >"$dir/users.txt"

# PgBouncer refuses to run as root.
if [ "$(id -u)" = 0 ]; then
  chown -R postgres "$dir"
  runuser -u postgres -- pgbouncer -d "$dir/pgbouncer.ini"
else
  pgbouncer -d "$dir/pgbouncer.ini"
fi
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.2; done
pg_isready -h 127.0.0.1 -p "$port"
pgbouncer --version | head -n 1
