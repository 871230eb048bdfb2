#!/usr/bin/env bash
# The databases' own limit on this machine: single-row INSERT transactions per second (each one a
# commit), at concurrency 1 and 32, for SQLite (WAL, synchronous=NORMAL: Antler's settings; one
# writer), PostgreSQL (pgbench with a one-INSERT script) and MySQL/MariaDB (mysqlslap).
# Antler's stateful `echo` throughput (scripts/bench/stateful.sh) is quoted next to these figures
# in docs/BENCHMARKS.md.
#
#   scripts/bench/db-commit-rate.sh            (DURATION=10 seconds per measurement)
# Uses the `test` databases of the local servers (PGURL, MYSQL_* to override); the scratch
# tables are dropped at the end.
set -euo pipefail
DURATION="${DURATION:-10}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432/test}"
MYSQL_HOST="${MYSQL_HOST:-127.0.0.1}" MYSQL_USER="${MYSQL_USER:-root}" MYSQL_DB="${MYSQL_DB:-test}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

printf '%-10s %5s %12s\n' database conc commits/s

# ---------------------------------------------------------------- SQLite
python3 - "$tmp/bench.db" "$DURATION" <<'EOF'
import sqlite3, sys, time
db, secs = sys.argv[1], float(sys.argv[2])
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=NORMAL")
c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
n, end = 0, time.monotonic() + secs
while time.monotonic() < end:
    c.execute("BEGIN IMMEDIATE"); c.execute("INSERT INTO t (v) VALUES ('x')"); c.execute("COMMIT")
    n += 1
print(f"{'sqlite':<10} {1:5d} {n / secs:12.0f}")
EOF

# ---------------------------------------------------------------- PostgreSQL
psql -q "$PGURL" -c "CREATE TABLE IF NOT EXISTS antler_bench_commit (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)"
echo "INSERT INTO antler_bench_commit (v) VALUES ('x');" > "$tmp/insert.sql"
for c in 1 32; do
  tps=$(pgbench -n -f "$tmp/insert.sql" -c "$c" -j "$(( c < 2 ? 1 : 2 ))" -T "$DURATION" "$PGURL" 2>/dev/null |
    awk '/^tps/ {print int($3)}')
  printf '%-10s %5d %12s\n' postgres "$c" "$tps"
done
psql -q "$PGURL" -c "DROP TABLE antler_bench_commit"

# ---------------------------------------------------------------- MySQL / MariaDB
my() { mysql --protocol=tcp -h "$MYSQL_HOST" -u "$MYSQL_USER" "$MYSQL_DB" "$@"; }
my -e "CREATE TABLE IF NOT EXISTS antler_bench_commit (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(8) NOT NULL) ENGINE=InnoDB"
for c in 1 32; do
  # a fixed number of autocommit INSERTs, sized to take about DURATION seconds
  q=$(( c == 1 ? 2000 : 20000 ))
  secs=$(mysqlslap --protocol=tcp -h "$MYSQL_HOST" -u "$MYSQL_USER" --create-schema="$MYSQL_DB" \
    --concurrency="$c" --iterations=1 --number-of-queries="$q" \
    --query="INSERT INTO antler_bench_commit (v) VALUES ('x')" 2>/dev/null |
    awk '/Average number of seconds/ {print $(NF-1)}')
  printf '%-10s %5d %12.0f\n' mysql "$c" "$(python3 -c "print($q / max($secs, 1e-9))")"
done
my -e "DROP TABLE antler_bench_commit"
