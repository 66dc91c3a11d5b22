#!/usr/bin/env bash
# Side by side with stock MooseFS 3.0.117: starts ours (master, two chunkservers and a mount
# on 127.0.0.1, as bench/run.sh does) and stock MooseFS (the same, in a private network
# namespace, since stock refuses chunkservers on 127.0.0.0/8), all data under one /tmp folder
# on the same disk, then runs every workload alternately ours/stock at goal 1 and goal 2 and
# prints medians and the time ratio ours/stock (lower is better; < 1 means we win).
# Needs root (FUSE, namespaces, drop_caches), fio, python3 with sqlite3, and for the real
# programs git and rsync.
#   bench/side-by-side.sh [--quick] [--reps N] [--no-programs] [--only LIST]
#     --quick        256 MiB, 1,000 files, 100 sqlite commits, /usr/include/linux, 2 reps
#     --reps N       repetitions (default 3); the order ours/stock flips on every one
#     --no-programs  skip the "real programs" (tar -x/-c/-d, cp -a, rsync, git add/commit/gc/clone,
#                    python compileall, rm -rf, on a copy of $tree_src and python's stdlib)
#     --only LIST    only these workloads, comma-separated: seq, small, rand, sqlite, tree,
#                    and these not run by default: rwrite (4 KiB random writes, direct),
#                    rwbuf (4 KiB random writes, buffered, fsync every 64), smallread (4,000
#                    files of 4 KiB written, read cold, listed cold), ren (folders, renames,
#                    chmod -R, chown -R)
#   MOOSE_BIN=DIR  our binaries (default: cargo build --release)
#   STOCK_NICE=N   stock daemons' NICE_LEVEL (default 0 like ours; stock's own default is -19)
#   CHANGELOG_SAVE_MODE=N  our master's mode (default 0, as in bench/run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/ours.sh
source bench/ours.sh
# shellcheck source=bench/stock.sh
source bench/stock.sh

size=1G size_mib=1024 files=10000 runtime=15 commits=1000 reps=3 tree_src=/usr/include programs=1 only=
while [ $# -gt 0 ]; do
    case $1 in
        --quick) size=256M size_mib=256 files=1000 runtime=3 commits=100 reps=2 tree_src=/usr/include/linux ;;
        --reps) reps=$2; shift ;;
        --no-programs) programs=0 ;;
        --only) only=$2; shift ;;
        *) echo "usage: bench/side-by-side.sh [--quick] [--reps N] [--no-programs] [--only seq,small,rand,sqlite,tree,rwrite,rwbuf,smallread,ren]" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "side-by-side: run as root (FUSE, namespaces, drop_caches)" >&2; exit 1; }
command -v fio >/dev/null || { echo "side-by-side: fio is missing: apt-get install fio" >&2; exit 1; }
stock_packages side-by-side

our_binaries

work=$(mktemp -d /tmp/moose-side.XXXXXX)
chmod 755 "$work"   # stock daemons drop to user mfs, which must reach its folders
o=$work/ours s=$work/stock
declare -A mnt=([ours]=$o/mnt [stock]=$s/mnt)

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    echo "side-by-side: cleaning up (stock's undeleted chunks can take a while)" >&2
    if mountpoint -q "${mnt[ours]}"; then umount "${mnt[ours]}" 2>/dev/null || umount -l "${mnt[ours]}"; fi
    stop_stock "$s" "${mnt[stock]}" "$rc"
    stop_ours "$o" "${mnt[ours]}"
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- ours: exactly as bench/run.sh, on 127.0.0.1 ---
start_ours "$o" "${mnt[ours]}"
wait_for 15 "our chunkservers' space" has_space "${mnt[ours]}"
start_stock "$s" "${mnt[stock]}"

setgoal() {   # setgoal FS GOAL DIR
    if [ "$1" = ours ]; then "$bin/moose-tool" setgoal -r "$2" "$3" >/dev/null
    else "${nsx[@]}" mfssetgoal -r "$2" "$3" >/dev/null; fi
}
for fs in ours stock; do
    for g in 1 2; do mkdir -p "${mnt[$fs]}/g$g"; setgoal "$fs" "$g" "${mnt[$fs]}/g$g"; done
done
# A wrong goal would make the comparison meaningless: check stock took it.
"${nsx[@]}" mfsgetgoal "${mnt[stock]}/g2" | grep -q ': 2$' ||
    { echo "side-by-side: stock did not take goal 2" >&2; exit 1; }

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
fio_mibs() { fio --minimal "$@" | awk -F';' '{ r = $7; w = $48; printf "%.1f", (r > w ? r : w) / 1024 }'; }
fio_iops() { fio --minimal "$@" | awk -F';' '{ printf "%.0f", $8 }'; }
declare -A vals   # "metric,goal,fs" -> the figures of every repetition
add() { vals[$1,$2,$3]+="$4 "; }

w_seq() {   # fio sequential write, then cold read, of one file
    local d=${mnt[$1]}/g$2
    sync
    add write "$2" "$1" "$(fio_mibs --name=w --filename="$d/seq" --rw=write --bs=1M --size=$size --direct=1 --ioengine=psync --end_fsync=1)"
    drop
    add read "$2" "$1" "$(fio_mibs --name=r --filename="$d/seq" --rw=read --bs=1M --size=$size --direct=1 --ioengine=psync)"
    rm -f "$d/seq"
}
w_small() {   # create, ls -l (cold), rm -rf of $files empty files in one folder
    local d=${mnt[$1]}/g$2/small t0 t1 t2 t3
    mkdir "$d"; sync
    t0=$(now); (cd "$d" && seq -f 'f%g' "$files" | xargs touch); t1=$(now)
    drop
    t2=$(now); ls -l "$d" >/dev/null; t3=$(now)
    add create "$2" "$1" "$(secs "$t0" "$t1")"; add ls "$2" "$1" "$(secs "$t2" "$t3")"
    t0=$(now); rm -rf "$d"; t1=$(now)
    add rm "$2" "$1" "$(secs "$t0" "$t1")"
}
w_rand() {   # 4 KiB random reads at QD1 on a 256 MiB file written once per cluster and goal
    local f=${mnt[$1]}/g$2/rand
    [ -e "$f" ] || fio --name=prep --filename="$f" --rw=write --bs=1M --size=256M --ioengine=psync --end_fsync=1 >/dev/null
    drop
    add iops "$2" "$1" "$(fio_iops --name=rr --filename="$f" --rw=randread --bs=4k --size=256M --runtime=$runtime --time_based --direct=1 --ioengine=psync)"
}
w_sqlite() {   # ms per commit of single-row inserts in autocommit mode (a journal file per commit)
    local d=${mnt[$1]}/g$2
    sync
    add sqlite "$2" "$1" "$(python3 bench/sqlite_commits.py "$d/bench.db" "$commits")"
    rm -f "$d/bench.db" "$d/bench.db-journal"
}
w_tree() {   # real programs on a copy of $tree_src and of python's standard library
    local d=${mnt[$1]}/g$2 t=()
    mkdir "$d/tree" "$d/py"; sync
    t+=("$(now)"); tar -xf "$work/tree.tar" -C "$d/tree"
    t+=("$(now)"); tar -cf "$d/tree.tar" -C "$d" tree
    t+=("$(now)"); tar -df "$d/tree.tar" -C "$d"
    t+=("$(now)"); cp -a "$d/tree" "$d/tree2"
    t+=("$(now)"); rsync -a "$d/tree/" "$d/tree3/"
    t+=("$(now)"); (cd "$d/tree2" && git init -q && git add -A && git -c user.name=bench -c user.email=bench@localhost commit -qm tree)
    t+=("$(now)"); git -C "$d/tree2" gc -q
    t+=("$(now)"); git clone -q "$d/tree2" "$d/clone"
    t+=("$(now)"); tar -xf "$work/py.tar" -C "$d/py"; python3 -m compileall -q "$d/py" >/dev/null
    t+=("$(now)"); rm -rf "$d/tree" "$d/tree2" "$d/tree3" "$d/clone" "$d/py" "$d/tree.tar"
    t+=("$(now)")
    local i=0 m
    for m in tar tarc tard cp rsync gitadd gitgc gitclone compileall rmtree; do
        add "$m" "$2" "$1" "$(secs "${t[$i]}" "${t[$((i + 1))]}")"
        i=$((i + 1))
    done
}

randwrite_iops() {   # FS GOAL FIO_OPTION...: 4 KiB random writes into a 256 MiB file, IOPS
    local f=${mnt[$1]}/g$2/rw
    fio --name=prep --filename="$f" --rw=write --bs=1M --size=256M --ioengine=psync --end_fsync=1 >/dev/null
    fio --minimal --name=rw --filename="$f" --rw=randwrite --bs=4k --size=256M --runtime=10 --time_based --ioengine=psync "${@:3}" |
        awk -F';' '{ printf "%.0f", $49 }'
    rm -f "$f"
}
w_rwrite() { add rwrite "$2" "$1" "$(randwrite_iops "$1" "$2" --direct=1)"; }
w_rwbuf() { add rwbuf "$2" "$1" "$(randwrite_iops "$1" "$2" --fsync=64)"; }
w_smallread() {   # 4,000 files of 4 KiB: written, read cold with cat, listed cold (find -ls, du)
    local d=${mnt[$1]}/g$2/sr t0 t1 t2 t3
    mkdir "$d"; sync
    t0=$(now); python3 -c "
import os, sys
for i in range(4000):
    with open(f'{sys.argv[1]}/f{i}', 'wb') as f:
        f.write(os.urandom(4096))" "$d"; t1=$(now)
    add swrite "$2" "$1" "$(secs "$t0" "$t1")"
    drop
    t0=$(now); cat "$d"/* > /dev/null; t1=$(now)
    add sread "$2" "$1" "$(secs "$t0" "$t1")"
    drop
    t0=$(now); find "$d" -ls > /dev/null; du -s "$d" > /dev/null; t1=$(now)
    add sfind "$2" "$1" "$(secs "$t0" "$t1")"
    rm -rf "$d"
}
w_ren() {   # 200 folders of 20 new files, every file renamed into the next folder, chmod/chown -R
    local d=${mnt[$1]}/g$2/rn t0 t1
    mkdir "$d"; sync
    t0=$(now); python3 -c "
import os, sys
d = sys.argv[1]
for i in range(200):
    os.mkdir(f'{d}/d{i}')
    for j in range(20): open(f'{d}/d{i}/f{j}','w').close()
for i in range(200):
    for j in range(20): os.rename(f'{d}/d{i}/f{j}', f'{d}/d{(i+1)%200}/g{i}_{j}')
" "$d"; chmod -R go-w "$d"; chown -R 1:1 "$d"; t1=$(now)
    add ren "$2" "$1" "$(secs "$t0" "$t1")"
    rm -rf "$d"
}

workloads=(w_seq w_small w_rand w_sqlite)
if [ "$programs" = 1 ]; then workloads+=(w_tree); fi
if [ -n "$only" ]; then
    workloads=()
    for w in ${only//,/ }; do
        declare -F "w_$w" >/dev/null || { echo "side-by-side: no workload '$w' (seq, small, rand, sqlite, tree, rwrite, rwbuf, smallread, ren)" >&2; exit 2; }
        workloads+=("w_$w")
    done
fi
if [[ " ${workloads[*]} " == *" w_tree "* ]]; then
    for tool in git rsync; do
        command -v "$tool" >/dev/null || { echo "side-by-side: $tool is missing (real programs): apt-get install $tool, or --no-programs" >&2; exit 1; }
    done
    # Read from the local disk, the same for both.
    tar -cf "$work/tree.tar" -C "$(dirname "$tree_src")" "$(basename "$tree_src")"
    stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
    tar -cf "$work/py.tar" --exclude=site-packages --exclude=test --exclude=tests \
        --exclude=__pycache__ --exclude='*.pyc' -C "$(dirname "$stdlib")" "$(basename "$stdlib")"
fi
echo "load before: $(uptime)" >&2
for rep in $(seq "$reps"); do
    order=(ours stock)
    [ $((rep % 2)) = 0 ] && order=(stock ours)   # flip so neither side always goes first
    for g in 1 2; do
        for w in "${workloads[@]}"; do
            for fs in "${order[@]}"; do
                echo "rep $rep/$reps goal $g $w $fs" >&2
                "$w" "$fs" "$g"
            done
        done
    done
done
echo "load after: $(uptime)" >&2
# Stock deletes chunks of removed files lazily (a few per second): what is still on disk is
# deletion work it has not paid for yet. Both hold only the random-read files (768 MiB) by now.
sleep 2
# Stock may delete a file while du walks its folder: du then complains and fails, but its
# total still stands.
disk_mib() { { du -smc "$@" 2>/dev/null || true; } | awk 'END { print $1 }'; }
disk_ours=$(disk_mib "$o"/disk1 "$o"/disk2)
disk_stock=$(disk_mib "$s"/hdd1 "$s"/hdd2)

median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
med() { median <<< "${vals[$1,$2,$3]}"; }
# row LABEL METRIC KIND DIGITS: KIND "rate" (higher is better) turns into time as its inverse.
row() {
    local g ours stock
    [ -n "${vals[$2,1,ours]:-}" ] || return 0   # not run (--only)
    for g in 1 2; do
        ours=$(med "$2" "$g" ours); stock=$(med "$2" "$g" stock)
        awk -v l="$1" -v g="$g" -v a="$ours" -v b="$stock" -v k="$3" -v d="$4" 'BEGIN {
            r = (k == "rate") ? b / a : a / b
            printf "%-46s %4s %10.*f %10.*f %8.2f\n", l, g, d, a, d, b, r }'
    done
}
sumrow() {   # sumrow LABEL METRIC...: the sum of medians, as a time
    local label=$1 g m ours stock
    shift
    [ -n "${vals[$1,1,ours]:-}" ] || return 0   # not run (--only)
    for g in 1 2; do
        ours=0 stock=0
        for m in "$@"; do
            ours=$(awk -v x="$ours" -v y="$(med "$m" "$g" ours)" 'BEGIN { print x + y }')
            stock=$(awk -v x="$stock" -v y="$(med "$m" "$g" stock)" 'BEGIN { print x + y }')
        done
        awk -v l="$label" -v g="$g" -v a="$ours" -v b="$stock" 'BEGIN {
            printf "%-46s %4s %10.2f %10.2f %8.2f\n", l, g, a, b, a / b }'
    done
}
printf 'medians of %s runs; %s MiB files, %s small files, %s commits; ratio = time ours/stock (< 1: we win)\n' \
    "$reps" "$size_mib" "$files" "$commits"
printf '%-46s %4s %10s %10s %8s\n' workload goal ours stock ratio
row "fio seq write, 1 MiB direct, end fsync (MiB/s)" write rate 0
row "fio seq read, 1 MiB direct, cold (MiB/s)" read rate 0
row "create $files files, touch (s)" create time 2
row "ls -l of $files files, cold (s)" ls time 2
row "rm -rf of $files files (s)" rm time 2
sumrow "create + ls -l + rm -rf (s)" create ls rm
row "fio 4 KiB random read QD1, ${runtime} s (IOPS)" iops rate 0
row "sqlite autocommit insert (ms per commit)" sqlite time 1
row "fio 4 KiB random write QD1, direct, 10 s (IOPS)" rwrite rate 0
row "fio 4 KiB random write, buffered, fsync/64 (IOPS)" rwbuf rate 0
row "write 4,000 files of 4 KiB (s)" swrite time 2
row "cat of those 4,000 files, cold (s)" sread time 2
row "find -ls + du of them, cold (s)" sfind time 2
row "200 folders, 4,000 files, renames, chmod/chown -R (s)" ren time 2
if [ -n "${vals[tar,1,ours]:-}" ]; then
    row "tar -x of $tree_src (s)" tar time 2
    row "tar -c of the tree onto the mount (s)" tarc time 2
    row "tar -d of that archive against the tree (s)" tard time 2
    row "cp -a of the tree (s)" cp time 2
    row "rsync -a of the tree (s)" rsync time 2
    row "git init + add + commit of the tree (s)" gitadd time 2
    row "git gc (s)" gitgc time 2
    row "git clone (s)" gitclone time 2
    row "python compileall of its stdlib copy (s)" compileall time 2
    row "rm -rf of every copy (s)" rmtree time 2
    sumrow "real programs: all of the above (s)" tar tarc tard cp rsync gitadd gitgc gitclone compileall rmtree
fi
printf 'chunk data on disk after the run (MiB): ours %s, stock %s\n' "$disk_ours" "$disk_stock"
