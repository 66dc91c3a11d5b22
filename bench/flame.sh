#!/usr/bin/env bash
# Where the CPU goes on one workload: perf samples every CPU (call graphs unwound with DWARF)
# while the workload runs on a local cluster (bench/ours.sh: a master, two chunkservers and a
# mount on 127.0.0.1, goal 2), then draws a flame graph and prints each thread's share and the
# functions the samples were taken in.
#   bench/flame.sh create OUT.svg   touch 5,000 empty files in one folder
#   bench/flame.sh write OUT.svg    fio sequential write of 512 MiB, 1 MiB direct, end fsync
#   MOOSE_BIN=DIR bench/flame.sh …  use the binaries in DIR (release builds keep the symbols:
#                                   the release profile has debug = 1)
# Needs root, perf, fio and inferno (cargo install inferno: inferno-collapse-perf and
# inferno-flamegraph).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/ours.sh
source bench/ours.sh

usage() { echo "usage: bench/flame.sh create|write OUT.svg" >&2; exit 2; }
[ $# = 2 ] || usage
workload=$1 out=$(realpath -m "$2")
case $workload in create | write) ;; *) usage ;; esac
[ "$(id -u)" = 0 ] || { echo "flame: run as root (FUSE mounts, system-wide perf)" >&2; exit 1; }
for tool in perf fio inferno-collapse-perf inferno-flamegraph; do
    command -v "$tool" >/dev/null || {
        echo "flame: $tool is missing (perf: apt-get install linux-perf; fio: apt-get install fio; inferno: cargo install inferno)" >&2
        exit 1
    }
done

our_binaries
ours_in_tmp flame
"$bin/moose-tool" setgoal -r 2 "$mnt" >/dev/null
mkdir "$mnt/w"

case $workload in
    create) run=(bash -c 'cd "$1" && seq 1 5000 | sed s/^/f/ | xargs touch' _ "$mnt/w") ;;
    write) run=(fio --name=w --filename="$mnt/w/big" --rw=write --bs=1M --size=512M --direct=1
        --end_fsync=1 --output=/dev/null) ;;
esac

perf record -q -F 499 -a --call-graph dwarf,16384 -o "$work/perf.data" -- "${run[@]}" 2>/dev/null
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf > "$work/folded"
inferno-flamegraph --title "moose $workload ($(date -u +%F))" < "$work/folded" > "$out"
echo "flame graph: $out"
# The first frame of each folded stack is the thread's name: its share of all samples.
awk '{ n = $NF; s = $0; sub(/ [0-9]+$/, "", s); split(s, f, ";"); t[f[1]] += n; all += n }
     END { for (k in t) printf "%5.1f%%  %s\n", 100 * t[k] / all, k }' "$work/folded" |
    sort -rn | head -12
echo "busiest functions (own samples, % of all; idle excluded):"
awk '$1 !~ /^swapper/ { n = $NF; s = $0; sub(/ [0-9]+$/, "", s); k = split(s, f, ";");
       t[f[1] ": " f[k]] += n } { all += $NF }
     END { for (x in t) printf "%5.1f%%  %s\n", 100 * t[x] / all, x }' "$work/folded" |
    sort -rn | head -25
