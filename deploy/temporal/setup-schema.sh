#!/bin/sh
# Create and migrate Temporal's two PostgreSQL databases (idempotent).
# docker-compose.yml's temporal-schema-setup service runs this inside
# temporalio/admin-tools (the defaults below); the production topology test
# (test/production/) runs the same script with a Go-built temporal-sql-tool,
# so the commands users run are the commands CI checks.
#
# SQL_TOOL       temporal-sql-tool binary      (default: temporal-sql-tool on PATH)
# SCHEMA_DIR     Temporal's schema/ folder     (default: /etc/temporal/schema, as in admin-tools)
# SQL_HOST, SQL_PORT, SQL_USER, SQL_PASSWORD   (defaults: postgresql, 5432, temporal; the tool reads SQL_PASSWORD itself)
# DB, VISIBILITY_DB                            (defaults: temporal, temporal_visibility)
set -eu

SQL_TOOL=${SQL_TOOL:-temporal-sql-tool}
SCHEMA_DIR=${SCHEMA_DIR:-/etc/temporal/schema}
SQL_HOST=${SQL_HOST:-postgresql}
SQL_PORT=${SQL_PORT:-5432}
SQL_USER=${SQL_USER:-temporal}
DB=${DB:-temporal}
VISIBILITY_DB=${VISIBILITY_DB:-temporal_visibility}
export SQL_PASSWORD=${SQL_PASSWORD:-temporal}

sql() {
  "$SQL_TOOL" --plugin postgres12 --ep "$SQL_HOST" -p "$SQL_PORT" -u "$SQL_USER" "$@"
}

for pair in "$DB:temporal" "$VISIBILITY_DB:visibility"; do
  db=${pair%%:*}
  schema=${pair#*:}
  # `create` fails when the database exists (a re-run): that is fine, the next steps are idempotent.
  sql --db "$db" create || echo "setup-schema: database $db exists"
  sql --db "$db" setup-schema -v 0.0
  sql --db "$db" update-schema -d "$SCHEMA_DIR/postgresql/v12/$schema/versioned"
done
echo "setup-schema: $DB and $VISIBILITY_DB are up to date"
