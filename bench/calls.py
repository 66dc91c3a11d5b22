#!/usr/bin/env python3
"""Latency of single system calls on a mount, the steps small-file programs are made of.

    bench/calls.py DIR [FILES]

In DIR (created if missing; on the mount to measure) for FILES files (default 300): open with
O_CREAT, a 4 KiB write, close, utime, chmod, stat, and a stat of a missing name; then 100 times
a 4 KiB pwrite + fsync of one file, 50 fdatasyncs with nothing to write, 200 sqlite autocommit
inserts (a journal file per commit), and at the end an unlink of each file. Prints the median
and the 90th percentile of each, in ms. Run it against ours and stock (bench/side-by-side.sh
prints the two mount points) or on a local disk for reference.
"""
import os
import sqlite3
import statistics
import sys
import time

directory = sys.argv[1]
files = int(sys.argv[2]) if len(sys.argv) > 2 else 300
os.makedirs(directory, exist_ok=True)
times = {}


def timed(name, call, *args):
    start = time.perf_counter()
    result = call(*args)
    times.setdefault(name, []).append(time.perf_counter() - start)
    return result


block = b"x" * 4096
for i in range(files):
    path = f"{directory}/f{i}"
    fd = timed("open(O_CREAT)", os.open, path, os.O_CREAT | os.O_WRONLY, 0o644)
    timed("write 4 KiB", os.write, fd, block)
    timed("close after the write", os.close, fd)
    timed("utime", os.utime, path, (1, 1))
    timed("chmod", os.chmod, path, 0o600)
    timed("stat", os.stat, path)

# A name that does not exist: one lookup through FUSE, the mount and the master (the kernel
# keeps no negative entry), the round trip every create and most path walks start with.
for i in range(files):
    start = time.perf_counter()
    try:
        os.stat(f"{directory}/missing{i}")
    except FileNotFoundError:
        pass
    times.setdefault("stat of a missing name", []).append(time.perf_counter() - start)

fd = os.open(f"{directory}/synced", os.O_CREAT | os.O_WRONLY, 0o644)
for i in range(100):
    start = time.perf_counter()
    os.pwrite(fd, block, (i % 16) * 4096)
    os.fsync(fd)
    times.setdefault("4 KiB pwrite + fsync", []).append(time.perf_counter() - start)
for _ in range(50):
    timed("fdatasync, nothing to write", os.fdatasync, fd)
os.close(fd)
os.unlink(f"{directory}/synced")

db_path = f"{directory}/bench.db"
db = sqlite3.connect(db_path, isolation_level=None)
db.execute("create table t (id integer primary key, v text)")
for _ in range(200):
    timed("sqlite autocommit insert", db.execute, "insert into t (v) values (?)", ("x" * 100,))
db.close()
os.unlink(db_path)

for i in range(files):
    timed("unlink", os.unlink, f"{directory}/f{i}")

for name, values in times.items():
    values.sort()
    p90 = values[int(len(values) * 0.9)]
    print(f"{name:30s} median {statistics.median(values) * 1000:7.3f} ms   p90 {p90 * 1000:7.3f} ms")
