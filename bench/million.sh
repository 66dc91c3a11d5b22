#!/usr/bin/env bash
# The million-file run: a local cluster (master, two chunkservers and a mount on 127.0.0.1),
# 4 writers create N empty files in 1,000 folders, then `ls -lR` of the tree, then `rm -rf`;
# prints the time of each step and the master's resident memory (VmRSS) before and after the
# creates, per file. Needs root (FUSE).
#   bench/million.sh [--files N]   N files in all (default 1,000,000; 20,000 for a smoke run)
#   MOOSE_BIN=DIR bench/million.sh use the binaries in DIR instead of building
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/ours.sh
source bench/ours.sh

files=1000000 folders=1000 writers=4
while [ $# -gt 0 ]; do
    case $1 in
        --files) files=${2:?--files needs a number}; shift 2 ;;
        *) echo "bench/million.sh: unknown argument '$1' (usage: bench/million.sh [--files N])" >&2; exit 2 ;;
    esac
done
case $files in
    ''|*[!0-9]*) echo "bench/million.sh: --files wants a whole number, not '$files'" >&2; exit 2 ;;
esac
[ "$files" -ge "$folders" ] || { echo "bench/million.sh: --files must be at least $folders (one per folder)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench/million.sh: run as root (FUSE mounts)" >&2; exit 1; }

our_binaries
ours_in_tmp million

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
master_rss_kib() {
    local pid
    pid=$(tr -dc '0-9' < "$work/master/.moose-master.lock")
    awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"
}

per_folder=$((files / folders))
tree=$mnt/million
mkdir "$tree"
rss_before=$(master_rss_kib)

# Writer w creates the files of folders w, w+4, w+8, ...: 4 writers in parallel.
t0=$(now)
for w in $(seq 0 $((writers - 1))); do
    (
        for d in $(seq "$w" "$writers" $((folders - 1))); do
            dir=$(printf '%s/dir-%04d' "$tree" "$d")
            mkdir "$dir"
            cd "$dir"
            # touch in batches: one process per 500 names, not one per file.
            seq -f "file-%06g.dat" $((d * per_folder)) $((d * per_folder + per_folder - 1)) |
                xargs -n 500 touch
        done
    ) &
done
wait
t1=$(now)
rss_after=$(master_rss_kib)
# ls -lR is the step timed; its regular files are counted as a check.
# shellcheck disable=SC2010
listed=$(ls -lR "$tree" | grep -c '^-')
t2=$(now)
rm -rf "$tree"
t3=$(now)

created=$((per_folder * folders))
[ "$listed" = "$created" ] || { echo "bench/million.sh: ls -lR listed $listed files, $created were created" >&2; exit 1; }
printf 'files\t%d in %d folders, %d writers\n' "$created" "$folders" "$writers"
printf 'create\t%s s\n' "$(secs "$t0" "$t1")"
printf 'ls -lR\t%s s\n' "$(secs "$t1" "$t2")"
printf 'rm -rf\t%s s\n' "$(secs "$t2" "$t3")"
printf 'master RSS\t%d KiB before, %d KiB after: %s bytes per file\n' "$rss_before" "$rss_after" \
    "$(awk -v a="$rss_before" -v b="$rss_after" -v n="$created" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')"
