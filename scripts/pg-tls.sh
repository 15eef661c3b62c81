#!/usr/bin/env bash
# A second PostgreSQL for the connection tests: cluster `ddb2pg_tls` on 127.0.0.1:5433
# with ssl = on, a CA and a server certificate made here (openssl), TLS-only access with
# scram-sha-256 passwords (`hostssl … scram-sha-256`, `hostnossl … reject`), a role
# `loader` with a password and its database `tlsdb`. The main cluster on 5432 is left as
# it is. Prints the environment the tests read (eval "$(bash scripts/pg-tls.sh env)").
#   bash scripts/pg-tls.sh up     create (once) and start it
#   bash scripts/pg-tls.sh env    the variables for the tests
#   bash scripts/pg-tls.sh down   stop it
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=5433
NAME=ddb2pg_tls
version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
# The certificates live with the cluster (made once), so every clone on this machine
# tests against the certificate the server holds.
DIR="/var/lib/postgresql/${version:-none}/$NAME-certs"
PASSWORD='Tr0ub4dor&3:x'

certs() {
  mkdir -p "$DIR"
  cd "$DIR"
  [ -f server.crt ] && return 0
  # The CA that signs the server, another CA that does not, a server certificate for
  # the name `localhost` only (so 127.0.0.1 is "another host name" to verify-full).
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ddb2pg test CA" \
    -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=another CA" \
    -keyout other-ca.key -out other-ca.crt 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile server.ext -out server.crt 2>/dev/null
  chmod 600 server.key
  chown postgres:postgres server.key server.crt ca.crt
  chmod 644 server.crt ca.crt other-ca.crt
  cd - >/dev/null
}

up() {
  if [ -z "$version" ] || ! command -v pg_createcluster >/dev/null; then
    echo "pg_createcluster not found: the TLS cluster cannot be made here" >&2
    exit 1
  fi
  certs
  if ! pg_lsclusters -h | awk '{print $2}' | grep -qx "$NAME"; then
    pg_createcluster "$version" "$NAME" -p "$PORT" >/dev/null
  fi
  conf="/etc/postgresql/$version/$NAME"
  install -o postgres -g postgres -m 600 "$DIR/server.key" "/var/lib/postgresql/$version/$NAME/server.key"
  install -o postgres -g postgres -m 644 "$DIR/server.crt" "/var/lib/postgresql/$version/$NAME/server.crt"
  cat > "$conf/conf.d/ddb2pg.conf" <<CONF
listen_addresses = 'localhost'
port = $PORT
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
password_encryption = scram-sha-256
max_connections = 60
fsync = off
CONF
  cat > "$conf/pg_hba.conf" <<HBA
local   all all                 peer
hostssl all all 127.0.0.1/32    scram-sha-256
hostssl all all ::1/128         scram-sha-256
hostnossl all all 0.0.0.0/0     reject
hostnossl all all ::/0          reject
HBA
  if pg_lsclusters -h | awk -v n="$NAME" '$2 == n {print $4}' | grep -q online; then
    pg_ctlcluster --skip-systemctl-redirect "$version" "$NAME" reload
  else
    pg_ctlcluster --skip-systemctl-redirect "$version" "$NAME" start
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h localhost -p "$PORT" && break
    sleep 1
  done
  su postgres -c "psql -q -p $PORT -v ON_ERROR_STOP=1" <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loader') THEN CREATE ROLE loader LOGIN CREATEDB; END IF;
END \$\$;
ALTER ROLE loader PASSWORD '$PASSWORD';
SELECT 'CREATE DATABASE tlsdb OWNER loader' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'tlsdb') \gexec
SQL
}

case "${1:-up}" in
  up) up ;;
  env)
    echo "export DDB2PG_TLS_PORT=$PORT"
    echo "export DDB2PG_TLS_CA='$DIR/ca.crt'"
    echo "export DDB2PG_TLS_OTHER_CA='$DIR/other-ca.crt'"
    printf "export DDB2PG_TLS_PASSWORD=%q\n" "$PASSWORD"
    ;;
  down) pg_ctlcluster --skip-systemctl-redirect "$version" "$NAME" stop || true ;;
  *) echo "usage: $0 up|env|down" >&2; exit 2 ;;
esac
