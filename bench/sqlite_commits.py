"""Time per commit of single-row inserts in sqlite's autocommit mode (a journal file per
commit): python3 bench/sqlite_commits.py DB COMMITS [ms|us]. Prints the mean time per commit
in ms (two decimals) or µs (whole)."""
import sqlite3
import sys
import time

path, commits = sys.argv[1], int(sys.argv[2])
unit = sys.argv[3] if len(sys.argv) > 3 else "ms"
db = sqlite3.connect(path, isolation_level=None)
db.execute("create table t (id integer primary key, v text)")
start = time.perf_counter()
for _ in range(commits):
    db.execute("insert into t (v) values (?)", ("x" * 100,))
per_commit = (time.perf_counter() - start) / commits
print("%.0f" % (per_commit * 1e6) if unit == "us" else "%.2f" % (per_commit * 1e3))
