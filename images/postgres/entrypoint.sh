#!/bin/sh
# Start PostgreSQL like the upstream image does for the settings the operator uses: on an empty
# PGDATA run initdb with POSTGRES_USER and the password from POSTGRES_PASSWORD_FILE, create
# POSTGRES_DB, allow password (scram-sha-256) logins over TCP; then exec the server.
# A kept data directory gets mode 0700 back first, as the upstream image's entrypoint does: the
# kubelet's fsGroup ownership change on a persistent volume makes it group-writable, and the
# server refuses to start on such a directory.
set -eu
if [ "${1:-}" != postgres ]; then exec "$@"; fi
shift
: "${PGDATA:?PGDATA is not set}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ -d "$PGDATA" ]; then chmod 0700 "$PGDATA"; fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -n "${POSTGRES_PASSWORD_FILE:-}" ] && [ -s "$POSTGRES_PASSWORD_FILE" ] ||
    { echo "postgres-entrypoint: POSTGRES_PASSWORD_FILE must name a non-empty file" >&2; exit 1; }
  initdb --username="$user" --pwfile="$POSTGRES_PASSWORD_FILE" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /var/run/postgresql" -w start >/dev/null
    psql -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$user" -d postgres \
      -c "CREATE DATABASE \"$db\"" >/dev/null
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  echo "postgres-entrypoint: initialised $PGDATA (user $user, database $db)"
fi
exec postgres -c listen_addresses='*' -k /var/run/postgresql "$@"
