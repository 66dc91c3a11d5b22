#!/usr/bin/env bash
# The million-file run, ours and then stock MooseFS 3.0.117: on each (a master, two
# chunkservers and a mount; stock in a private network namespace, as bench/side-by-side.sh
# starts it), 4 writers create N empty files in 1,000 folders, then `ls -lR` of the tree,
# then `rm -rf`; prints the time of each step, the master's resident memory (VmRSS) before
# and after the creates, per file, and the time ratios ours/stock. Needs root (FUSE,
# namespaces).
#   bench/million.sh [--files N] [--ours-only]
#     --files N     N files in all (default 1,000,000; 20,000 for a smoke run)
#     --ours-only   skip stock (no ratios)
#   MOOSE_BIN=DIR   our binaries (default: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/ours.sh
source bench/ours.sh
# shellcheck source=bench/stock.sh
source bench/stock.sh

files=1000000 folders=1000 writers=4 with_stock=1
while [ $# -gt 0 ]; do
    case $1 in
        --files) files=${2:?--files needs a number}; shift 2 ;;
        --ours-only) with_stock=0; shift ;;
        *) echo "bench/million.sh: unknown argument '$1' (usage: bench/million.sh [--files N] [--ours-only])" >&2; exit 2 ;;
    esac
done
case $files in
    ''|*[!0-9]*) echo "bench/million.sh: --files wants a whole number, not '$files'" >&2; exit 2 ;;
esac
[ "$files" -ge "$folders" ] || { echo "bench/million.sh: --files must be at least $folders (one per folder)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench/million.sh: run as root (FUSE mounts, namespaces)" >&2; exit 1; }
[ "$with_stock" = 0 ] || stock_packages bench/million.sh

our_binaries
work=$(mktemp -d /tmp/moose-million.XXXXXX)
chmod 755 "$work"   # stock daemons drop to user mfs, which must reach its folders
o=$work/ours s=$work/stock
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    stop_stock "$s" "$s/mnt" "$rc"
    stop_ours "$o" "$o/mnt"
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
per_folder=$((files / folders))
created=$((per_folder * folders))
declare -A took

# run NAME MNT MASTER_PID: the three steps on the mount at MNT; the times go to took[NAME,step].
run() {
    local name=$1 tree=$2/million pid=$3 t0 t1 t2 t3 rss_before rss_after listed w writing=()
    mkdir "$tree"
    rss_before=$(rss_kib "$pid")
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
        writing+=("$!")
    done
    wait "${writing[@]}"   # the writers only: stock's daemons are children of this shell too
    t1=$(now)
    rss_after=$(rss_kib "$pid")
    # ls -lR is the step timed; its regular files are counted as a check.
    # shellcheck disable=SC2010
    listed=$(ls -lR "$tree" | grep -c '^-')
    t2=$(now)
    rm -rf "$tree"
    t3=$(now)
    [ "$listed" = "$created" ] || { echo "bench/million.sh: $name: ls -lR listed $listed files, $created were created" >&2; exit 1; }
    took[$name,create]=$(secs "$t0" "$t1")
    took[$name,ls]=$(secs "$t1" "$t2")
    took[$name,rm]=$(secs "$t2" "$t3")
    printf '%s\tcreate %s s, ls -lR %s s, rm -rf %s s; master RSS %d KiB before, %d KiB after: %s bytes per file\n' \
        "$name" "${took[$name,create]}" "${took[$name,ls]}" "${took[$name,rm]}" "$rss_before" "$rss_after" \
        "$(awk -v a="$rss_before" -v b="$rss_after" -v n="$created" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')"
}

printf 'files\t%d in %d folders, %d writers\n' "$created" "$folders" "$writers"
start_ours "$o" "$o/mnt"
run ours "$o/mnt" "$(tr -dc '0-9' < "$o/master/.moose-master.lock")"
stop_ours "$o" "$o/mnt"
[ "$with_stock" = 1 ] || exit 0
start_stock "$s" "$s/mnt"
run stock "$s/mnt" "$stock_master"
stop_stock "$s" "$s/mnt"

printf 'ratio ours/stock (time; < 1: we win)\n'
total() { awk -v a="${took[$1,create]}" -v b="${took[$1,ls]}" -v c="${took[$1,rm]}" 'BEGIN { print a + b + c }'; }
for step in create ls rm; do
    printf '  %s\t%.2f\n' "$step" "$(awk -v a="${took[ours,$step]}" -v b="${took[stock,$step]}" 'BEGIN { print a / b }')"
done
printf '  all\t%.2f\n' "$(awk -v a="$(total ours)" -v b="$(total stock)" 'BEGIN { print a / b }')"
