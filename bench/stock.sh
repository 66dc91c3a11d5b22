# shellcheck shell=bash
# Sourced by the bench scripts: stock MooseFS 3.0.117 (a master, two chunkservers and a mount)
# in a private network namespace, since stock refuses chunkservers on 127.0.0.0/8; the
# recipe of shared/reference/moosefs-observed.md, section 2. Needs root.

stock_pids=()

# Installs the Debian packages of stock MooseFS when a command is missing. $1: the script's
# name, for the message.
stock_packages() {
    if ! command -v mfsmaster >/dev/null || ! command -v mfsmount >/dev/null ||
        ! command -v mfssetgoal >/dev/null || ! command -v mfschunkserver >/dev/null; then
        echo "$1: installing stock MooseFS (Debian packages)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            moosefs-master moosefs-chunkserver moosefs-client moosefs-cli >/dev/null
    fi
}

alive() {   # a child that exited stays a zombie until waited for: not alive
    local st
    st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}
stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 100); do alive "$1" || break; sleep 0.2; done
    if alive "$1"; then kill -KILL "$1" 2>/dev/null || true; fi
    wait "$1" 2>/dev/null || true
}
wait_for() {   # wait_for SECONDS WHAT COMMAND...: polls until COMMAND succeeds
    local n=$(($1 * 10)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        n=$((n - 1))
        [ "$n" -gt 0 ] || { echo "$what did not come up" >&2; return 1; }
        sleep 0.1
    done
}
has_space() { [ "$(stat -f -c %b "$1")" -gt 0 ]; }

# start_stock DIR MNT: stock's folders and configs under DIR (made here; the folders above it
# must let user mfs through), mounted at MNT;
# sets ns (the namespace), nsx (the command prefix that runs a tool in it), stock_master
# (the master's pid) and stock_pids (mount, chunkservers, master: the order to stop them in).
# STOCK_NICE=N sets the daemons' NICE_LEVEL (default 0 like ours; stock's own is -19).
start_stock() {
    local s=$1 mnt=$2 a i nice_level=${STOCK_NICE:-0}
    ns=mstock$$   # our own namespace: its addresses exist nowhere else
    nsx=(nsenter "--net=/run/netns/$ns")   # network namespace only: mounts stay visible
    stock_pids=()
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    for a in 1 2 3; do ip -n "$ns" addr add "10.99.0.$a/32" dev lo; done
    mkdir -p "$s"/{master,cs1,cs2,hdd1,hdd2} "$mnt"
    chmod 755 "$s"   # the daemons drop to user mfs
    chown mfs:mfs "$s"/{master,cs1,cs2,hdd1,hdd2}
    install -o mfs -g mfs -m 640 /var/lib/mfs/metadata.mfs.empty "$s/master/metadata.mfs"
    printf '%s\n' "10.99.0.0/24 / rw,alldirs,admin,maproot=0:0" "10.99.0.0/24 . rw" > "$s/exports.cfg"
    : > "$s/topology.cfg"
    cat > "$s/master.cfg" <<CFG
DATA_PATH = $s/master
NICE_LEVEL = $nice_level
EXPORTS_FILENAME = $s/exports.cfg
TOPOLOGY_FILENAME = $s/topology.cfg
MATOML_LISTEN_HOST = 10.99.0.1
MATOCS_LISTEN_HOST = 10.99.0.1
MATOCL_LISTEN_HOST = 10.99.0.1
CFG
    # -f: stderr is the log and $! is the daemon itself (nsenter execs it).
    "${nsx[@]}" mfsmaster -c "$s/master.cfg" -f </dev/null >"$s/master.log" 2>&1 &
    stock_master=$!
    wait_for 15 "stock master" "${nsx[@]}" bash -c 'echo > /dev/tcp/10.99.0.1/9421'
    for i in 1 2; do
        echo "$s/hdd$i" > "$s/hdd$i.cfg"
        cat > "$s/cs$i.cfg" <<CFG
DATA_PATH = $s/cs$i
NICE_LEVEL = $nice_level
HDD_CONF_FILENAME = $s/hdd$i.cfg
MASTER_HOST = 10.99.0.1
BIND_HOST = 10.99.0.$((i + 1))
CSSERV_LISTEN_HOST = 10.99.0.$((i + 1))
CSSERV_LISTEN_PORT = $((9412 + 10 * i))
CFG
        "${nsx[@]}" mfschunkserver -c "$s/cs$i.cfg" -f </dev/null >"$s/cs$i.log" 2>&1 &
        stock_pids=("$!" "${stock_pids[@]}")
    done
    "${nsx[@]}" mfsmount -f "$mnt" -H 10.99.0.1 </dev/null >"$s/mount.log" 2>&1 &
    stock_pids=("$!" "${stock_pids[@]}" "$stock_master")
    wait_for 15 "stock mount" mountpoint -q "$mnt"
    # The master learns the chunkservers' space ~1.3 s after they register.
    wait_for 20 "stock chunkservers' space" has_space "$mnt"
    "${nsx[@]}" mfssettrashtime -r 0 "$mnt" >/dev/null   # default keeps deleted files 24 h
}

# stop_stock DIR MNT: unmounts and stops what start_stock started (safe to call twice); on
# a failure ($1 of the caller's exit status) shows the end of stock's logs, its only trace.
stop_stock() {
    local s=$1 mnt=$2 rc=${3:-0} l p
    if [ "$rc" != 0 ] && [ -d "$s" ]; then
        for l in "$s"/*.log; do [ -e "$l" ] && { echo "== $l"; tail -n 5 "$l"; }; done >&2
    fi
    if mountpoint -q "$mnt"; then umount "$mnt" 2>/dev/null || umount -l "$mnt"; fi
    for p in "${stock_pids[@]}"; do stop_pid "$p"; done
    stock_pids=()
    if [ -n "${ns:-}" ]; then ip netns del "$ns" 2>/dev/null || true; fi
}
