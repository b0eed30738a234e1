#!/usr/bin/env bash
# Memory and start-up at scale: a PostgreSQL database with ORGS orgs (default
# 100,000), each with a custom domain, a web app registration and an active
# generated secret; then credd starts on it, and this prints the time until health
# reports SERVING, the resident memory once it does and after a lookup load, and
# checks a few lookups.
#
#   scripts/scale.sh            # needs PostgreSQL on 127.0.0.1:5432 (trust), psql, grpcurl
set -euo pipefail
cd "$(dirname "$0")/.."
ORGS=${ORGS:-100000}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
DB=credd_scale_$$
PORT=${PORT:-50063}
TOKEN=scale-bootstrap-token-0123456789abcdef0123
cargo build --release --quiet --bins
createdb -h 127.0.0.1 -U postgres "$DB"
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; dropdb -h 127.0.0.1 -U postgres --if-exists "$DB"; }
trap cleanup EXIT
URL="$PG/$DB"
CREDD_LOG=warn target/release/credd migrate --database-url "$URL"
started=$(date +%s.%N)
psql -q -h 127.0.0.1 -U postgres -d "$DB" <<SQL
INSERT INTO orgs (id, client_id, name, main_website, custom_domain, create_time, update_time)
SELECT gen_random_uuid()::text, md5('client' || n || random()::text), 'Org ' || n,
       'https://org' || n || '.scale.example', 'login.org' || n || '.scale.example', now(), now()
FROM generate_series(1, $ORGS) AS n;
INSERT INTO app_registrations (id, org_id, name, platform, app_id, redirect_uri, natural_key,
                               apple_team_id, sha256_cert_fingerprints, require_pkce, create_time, update_time)
SELECT gen_random_uuid()::text, id, 'Web', 'WEB', '', 'https://app.' || custom_domain || '/oauth/callback',
       'https://app.' || custom_domain || '/oauth/callback', '', '', true, now(), now()
FROM orgs;
INSERT INTO client_secrets (id, org_id, state, description, hint, imported, phc, create_time, activate_time)
SELECT gen_random_uuid()::text, id, 'ACTIVE', '', 'abcd', false,
       '\$sha256\$' || rtrim(encode(sha256(convert_to(id, 'UTF8')), 'base64'), '='), now(), now()
FROM orgs;
ANALYZE;
SQL
echo "seeded $ORGS orgs, apps and secrets in $(echo "$(date +%s.%N) - $started" | bc) s"

t0=$(date +%s.%N)
CREDD_DATABASE_URL="$URL" CREDD_LISTEN="127.0.0.1:$PORT" CREDD_BOOTSTRAP_TOKEN=$TOKEN CREDD_LOG=warn \
  target/release/credd serve &
pid=$!
until [ "$(grpcurl -plaintext -max-time 1 "127.0.0.1:$PORT" grpc.health.v1.Health/Check 2>/dev/null | grep -c SERVING)" = 1 ]; do
  sleep 0.05
done
ready=$(echo "$(date +%s.%N) - $t0" | bc)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "ready (health SERVING) after ${ready} s; resident memory $((rss / 1024)) MiB"

domain=$(psql -tA -h 127.0.0.1 -U postgres -d "$DB" -c "SELECT custom_domain FROM orgs ORDER BY random() LIMIT 1")
client=$(psql -tA -h 127.0.0.1 -U postgres -d "$DB" -c "SELECT client_id FROM orgs WHERE custom_domain = '$domain'")
grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d "{\"custom_domain\": \"$domain\"}" \
  "127.0.0.1:$PORT" credd.v1.Orgs/GetOrg | grep -q "\"clientId\": \"$client\"" && echo "GetOrg by custom_domain: ok"
grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
  -d "{\"client_id\": \"$client\", \"redirect_uri\": \"https://app.$domain/oauth/callback\"}" \
  "127.0.0.1:$PORT" credd.v1.AppRegistrations/CheckRedirectUri | grep -q '"allowed": true' && echo "CheckRedirectUri: ok"
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "resident memory after the lookups: $((rss / 1024)) MiB"
