#!/usr/bin/env bash
# Two builds of ours side by side: a cluster of each (master, two chunkservers and a mount on
# 127.0.0.1, as bench/run.sh starts them) running at the same time, one workload alternately
# on each, and the medians. Both clusters see the same machine and disk at the same moments,
# which a run of one build after the other does not: on an ext4 without a journal, removing
# a cluster's files makes every file created in the next minutes slower (see
# docs/benchmarks.md), so the clusters' folders are kept until the end and removed then.
#   bench/builds.sh BASE_BIN NEW_BIN [--workload W] [--goal N] [--runs N] [--tar FILE]
#     BASE_BIN, NEW_BIN  folders holding each build's binaries (e.g. target/release)
#     --workload W  tar    tar -x of FILE, ms
#                   cp     cp -a of a tree extracted from FILE, ms
#                   tarc   tar -c onto the mount of a tree tar -x made from FILE just before, ms
#                   tree   tar -x of FILE, cp -a of it, rm -rf of both, ms
#                   sqlite autocommit single-row inserts, µs per commit (300 commits)
#                   rand   fio 4 KiB random reads at QD1 of a 256 MiB file, IOPS
#                   seq    fio sequential write of 1 GiB, 1 MiB direct, end fsync, MiB/s
#                   files  bench/million.sh in small: 20,000 empty files made by 4 writers
#                          in 20 folders, ls -lR, rm -rf, ms
#     --goal N      copies of every file (default 1)
#     --runs N      runs on each cluster (default 8); the first cluster alternates
#     --tar FILE    tree for tar, cp, tarc and tree (default: a tar of /usr/include/linux)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/ours.sh
source bench/ours.sh

usage() {
    echo "usage: bench/builds.sh BASE_BIN NEW_BIN [--workload tar|cp|tarc|tree|sqlite|rand|seq|files] [--goal N] [--runs N] [--tar FILE]" >&2
    exit 2
}
[ $# -ge 2 ] || usage
base_bin=$(realpath "$1") new_bin=$(realpath "$2")
shift 2
workload=tar goal=1 runs=8 tarball=
while [ $# -gt 0 ]; do
    case $1 in
        --workload) workload=$2; shift ;;
        --goal) goal=$2; shift ;;
        --runs) runs=$2; shift ;;
        --tar) tarball=$(realpath "$2"); shift ;;
        *) usage ;;
    esac
    shift
done
case $workload in tar | cp | tarc | tree | sqlite | rand | seq | files) ;; *) usage ;; esac
[ "$(id -u)" = 0 ] || { echo "builds: run as root (FUSE)" >&2; exit 1; }
for b in "$base_bin" "$new_bin"; do
    [ -x "$b/moose-master" ] || { echo "builds: no moose-master in $b" >&2; exit 1; }
done
case $workload in
    rand | seq) command -v fio >/dev/null || { echo "builds: fio is missing: apt-get install fio" >&2; exit 1; } ;;
esac
[ "$workload" != sqlite ] || python3 -c 'import sqlite3' 2>/dev/null || { echo "builds: python3 with sqlite3 is missing" >&2; exit 1; }

work=$(mktemp -d /tmp/moose-builds.XXXXXX)
stop_both() {
    bin=$base_bin stop_ours "$work/base" "$work/base/mnt"
    bin=$new_bin stop_ours "$work/new" "$work/new/mnt"
    rm -rf "$work"
}
trap stop_both EXIT
if [ -z "$tarball" ]; then
    tarball=$work/tree.tar
    tar -C /usr/include -cf "$tarball" linux
fi
for side in base new; do
    bin=${side}_bin
    bin=${!bin}
    mkdir -p "$work/$side"
    start_ours "$work/$side" "$work/$side/mnt"
    "$bin/moose-tool" setgoal -r "$goal" "$work/$side/mnt" >/dev/null
    # A first run of the workload's tree on each, so that both start with spares in use.
    mkdir "$work/$side/mnt/warm"
    tar -C "$work/$side/mnt/warm" -xf "$tarball"
done

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# run MNT I: one run of the workload on the cluster mounted at MNT; prints its figure.
run() {
    local m=$1 i=$2 t
    case $workload in
        tar)
            mkdir "$m/x$i"; t=$(date +%s%N)
            tar -C "$m/x$i" -xf "$tarball"; ms_since "$t" ;;
        cp)
            t=$(date +%s%N); cp -a "$m/warm" "$m/c$i"; ms_since "$t" ;;
        tarc)
            mkdir "$m/a$i"; tar -C "$m/a$i" -xf "$tarball"; t=$(date +%s%N)
            tar -C "$m" -cf "$m/a$i.tar" "a$i"; ms_since "$t" ;;
        tree)
            mkdir "$m/t$i"; t=$(date +%s%N)
            tar -C "$m/t$i" -xf "$tarball"; cp -a "$m/t$i" "$m/u$i"; rm -rf "$m/t$i" "$m/u$i"
            ms_since "$t" ;;
        sqlite)
            python3 bench/sqlite_commits.py "$m/db$i" 300 us
            ;;
        files)
            mkdir "$m/f$i"; t=$(date +%s%N)
            for w in 0 1 2 3; do
                (
                    for d in $(seq "$w" 4 19); do
                        mkdir "$m/f$i/$d" && cd "$m/f$i/$d" && seq -f "file-%04g" 1000 | xargs -n 500 touch
                    done
                ) &
            done
            wait
            [ "$(ls -lR "$m/f$i" | grep -c '^-')" = 20000 ] || { echo "builds: files: not all 20,000 files listed" >&2; exit 1; }
            rm -rf "$m/f$i"; ms_since "$t" ;;
        rand)
            [ -e "$m/rand" ] || fio --name=prep --filename="$m/rand" --rw=write --bs=1M --size=256M --ioengine=psync --end_fsync=1 >/dev/null
            fio --name=rand --filename="$m/rand" --rw=randread --bs=4k --size=256M --runtime=5 --time_based --direct=1 --ioengine=psync --output-format=json |
                python3 -c 'import json, sys; print(int(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))' ;;
        seq)
            fio --name=seq --filename="$m/seq$i" --rw=write --bs=1M --size=1G --direct=1 --ioengine=psync --end_fsync=1 --output-format=json |
                python3 -c 'import json, sys; print(int(json.load(sys.stdin)["jobs"][0]["write"]["bw"] / 1024))'
            rm -f "$m/seq$i" ;;
    esac
}

unit=ms
case $workload in sqlite) unit="µs per commit" ;; rand) unit=IOPS ;; seq) unit=MiB/s ;; esac
echo "$workload at goal $goal, $runs runs each ($unit): base $base_bin, new $new_bin"
for i in $(seq "$runs"); do
    order="base new"
    [ $((i % 2)) = 0 ] && order="new base"
    for side in $order; do
        echo "$side $(run "$work/$side/mnt" "$i")"
    done
done | python3 -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    side, figure = line.split()
    runs.setdefault(side, []).append(int(figure))
for side in ("base", "new"):
    print("%-4s median %8.0f   runs %s" % (side, statistics.median(runs[side]), sorted(runs[side])))
print("new/base %.2f" % (statistics.median(runs["new"]) / statistics.median(runs["base"])))
'
