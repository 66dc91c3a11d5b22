#!/usr/bin/env bash
# Benchmarks a local cluster (master, two chunkservers and a mount on 127.0.0.1) at goal 1
# and goal 2 and prints a table: fio sequential write and read of 1 GiB with 1 MiB direct
# I/O, create / `ls -l` / `rm -rf` of 10,000 files in one folder, fio 4 KiB random read at
# queue depth 1 for 15 s. Needs root (FUSE, dropping caches) and fio.
#   bench/run.sh [--quick]      --quick: 256 MiB and 1,000 files, for a smoke run
#   CHANGELOG_SAVE_MODE=2 bench/run.sh   sync every metadata change before its reply (default
#                                        0: written before the reply, synced within a second)
#   MOOSE_BIN=DIR bench/run.sh           use the binaries in DIR instead of building (to
#                                        compare two builds)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/ours.sh
source bench/ours.sh

size=1G files=10000 runtime=15
if [ "${1:-}" = "--quick" ]; then size=256M files=1000 runtime=3; fi
[ "$(id -u)" = 0 ] || { echo "bench: run as root (FUSE mounts, drop_caches)" >&2; exit 1; }
command -v fio >/dev/null || { echo "bench: fio is missing: apt-get install fio" >&2; exit 1; }

our_binaries
ours_in_tmp bench

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# MiB/s of a fio run (read or write side, whichever ran).
fio_mibs() {
    fio --minimal "$@" | awk -F';' '{ r = $7; w = $48; printf "%.0f", (r > w ? r : w) / 1024 }'
}
fio_iops() {
    fio --minimal "$@" | awk -F';' '{ printf "%.0f", $8 }'
}

# Requests the master has served (to count round trips per file).
served() {
    "$bin/moose-tool" info --json -H 127.0.0.1 -P "$cl_port" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["ops_total"])'
}
per_file() { awk -v a="$1" -v b="$2" -v n="$files" 'BEGIN { printf "%.1f", (b - a - 1) / n }'; }

declare -A result
for goal in 1 2; do
    d=$mnt/goal$goal
    mkdir -p "$d"
    "$bin/moose-tool" setgoal -r "$goal" "$d" >/dev/null
    result[write,$goal]=$(fio_mibs --name=w --filename="$d/seq" --rw=write --bs=1M --size=$size --direct=1 --ioengine=psync --end_fsync=1)
    drop
    result[read,$goal]=$(fio_mibs --name=r --filename="$d/seq" --rw=read --bs=1M --size=$size --direct=1 --ioengine=psync)
    rm -f "$d/seq"
    mkdir -p "$d/small"
    o0=$(served); t0=$(now); (cd "$d/small" && seq -f 'f%g' "$files" | xargs touch); t1=$(now); o1=$(served)
    result[create,$goal]=$(secs "$t0" "$t1"); result[create_rt,$goal]=$(per_file "$o0" "$o1")
    drop
    o0=$(served); t0=$(now); ls -l "$d/small" >/dev/null; t1=$(now); o1=$(served)
    result[ls,$goal]=$(secs "$t0" "$t1"); result[ls_rt,$goal]=$(per_file "$o0" "$o1")
    o0=$(served); t0=$(now); rm -rf "$d/small"; t1=$(now); o1=$(served)
    result[rm,$goal]=$(secs "$t0" "$t1"); result[rm_rt,$goal]=$(per_file "$o0" "$o1")
    fio --name=prep --filename="$d/rand" --rw=write --bs=1M --size=256M --ioengine=psync --end_fsync=1 >/dev/null
    drop
    result[iops,$goal]=$(fio_iops --name=rr --filename="$d/rand" --rw=randread --bs=4k --size=256M --runtime=$runtime --time_based --direct=1 --ioengine=psync)
    rm -f "$d/rand"
done

printf '%-44s %10s %10s\n' "workload ($size, $files files)" "goal 1" "goal 2"
printf '%-44s %10s %10s\n' "fio sequential write, 1 MiB direct (MiB/s)" "${result[write,1]}" "${result[write,2]}"
printf '%-44s %10s %10s\n' "fio sequential read, 1 MiB direct (MiB/s)" "${result[read,1]}" "${result[read,2]}"
printf '%-44s %10s %10s\n' "create $files files (s)" "${result[create,1]}" "${result[create,2]}"
printf '%-44s %10s %10s\n' "ls -l of $files files (s)" "${result[ls,1]}" "${result[ls,2]}"
printf '%-44s %10s %10s\n' "rm -rf of $files files (s)" "${result[rm,1]}" "${result[rm,2]}"
printf '%-44s %10s %10s\n' "fio 4 KiB random read, QD1 (IOPS)" "${result[iops,1]}" "${result[iops,2]}"
printf '%-44s %10s %10s\n' "master requests per file: create" "${result[create_rt,1]}" "${result[create_rt,2]}"
printf '%-44s %10s %10s\n' "master requests per file: ls -l" "${result[ls_rt,1]}" "${result[ls_rt,2]}"
printf '%-44s %10s %10s\n' "master requests per file: rm -rf" "${result[rm_rt,1]}" "${result[rm_rt,2]}"
