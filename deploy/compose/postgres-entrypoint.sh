#!/bin/sh
# First start: initdb and create the user and database named by the environment.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > "$pwfile"
  initdb -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --pwfile="$pwfile" -A scram-sha-256 >/dev/null
  rm -f "$pwfile"
  # As the official image: POSTGRES_DB defaults to the user's name.
  db=${POSTGRES_DB:-${POSTGRES_USER:-postgres}}
  if [ "$db" != "postgres" ]; then
    echo "CREATE DATABASE \"$db\" OWNER \"${POSTGRES_USER:-postgres}\";" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
fi
exec "$@"
