#!/usr/bin/env bash
# Build the pinned Temporal server and its SQL tool from source (the versions
# docker-compose.yml runs; deploy/temporal/VERSION) into
# .tools/temporal-server-<version>/, with the module's schema/ and config/
# folders next to them. Skipped when already built. Needs Go and the Go
# module proxy; about 10 minutes on 2 cores with a cold Go cache.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VERSION="$(tr -d ' \n' < "$ROOT/deploy/temporal/VERSION")"
OUT="$ROOT/.tools/temporal-server-$VERSION"

if [ -x "$OUT/temporal-server" ] && [ -x "$OUT/temporal-sql-tool" ] && [ -d "$OUT/schema" ] && [ -d "$OUT/config" ]; then
  echo "temporal server $VERSION: already built in ${OUT#"$ROOT"/}"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "temporal server $VERSION: 'go' is not installed: install Go (https://go.dev/dl/), then run $0 again" >&2
  exit 2
fi

start=$(date +%s)
mkdir -p "$OUT"
echo "temporal server $VERSION: go install (about 10 minutes on a cold Go cache)"
# Built into a scratch GOBIN first, so an interrupted build never looks finished.
tmp="$(mktemp -d "$OUT/.build-XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" go install "go.temporal.io/server/cmd/server@v$VERSION"
GOBIN="$tmp" go install "go.temporal.io/server/cmd/tools/sql@v$VERSION"
# The module's schema/ (for temporal-sql-tool) and config/ (for the server), from the module cache.
MODULE="$(go env GOMODCACHE)/go.temporal.io/server@v$VERSION"
rm -rf "$OUT/schema" "$OUT/config"
cp -R "$MODULE/schema" "$OUT/schema"
cp -R "$MODULE/config" "$OUT/config"
chmod -R u+w "$OUT/schema" "$OUT/config"
mv "$tmp/sql" "$OUT/temporal-sql-tool"
mv "$tmp/server" "$OUT/temporal-server"
echo "temporal server $VERSION: built in $(( $(date +%s) - start )) s into ${OUT#"$ROOT"/}"
