# shellcheck shell=bash
# Sourced by the bench scripts: our cluster on 127.0.0.1 (a master, two chunkservers and a
# mount), its folders under one work folder. Needs $bin (where our binaries are): see
# our_binaries.

# Sets bin: $MOOSE_BIN (to compare builds), else a release build made now.
our_binaries() {
    if [ -n "${MOOSE_BIN:-}" ]; then
        bin=$MOOSE_BIN
    else
        cargo build --release --bins -q
        bin=${CARGO_TARGET_DIR:-$PWD/target}/release
    fi
}

# ours_in_tmp NAME: our cluster in a new /tmp/moose-NAME.XXXXXX (sets work and mnt), stopped
# and removed when the script exits.
ours_in_tmp() {
    work=$(mktemp -d "/tmp/moose-$1.XXXXXX")
    mnt=$work/mnt
    trap 'stop_ours "$work" "$mnt"; rm -rf "$work"' EXIT
    start_ours "$work" "$mnt"
}

# A free TCP port on 127.0.0.1.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 10000)); }

# start_ours WORK MNT: writes the configs into WORK, starts the daemons and mounts at MNT
# (with $MOUNT_OPTS, e.g. "-o dirsync"); sets cl_port (the master's client port).
start_ours() {
    : "${bin:?set bin to the folder of our binaries before sourcing bench/ours.sh}"
    local work=$1 mnt=$2 cs_port ml_port i
    mkdir -p "$work/master" "$mnt"
    echo "* / rw,alldirs,maproot=0" > "$work/exports.cfg"
    cs_port=$(port); cl_port=$(port); ml_port=$(port)
    cat > "$work/master.cfg" <<CFG
DATA_PATH = $work/master
WORKING_USER = root
EXPORTS_FILENAME = $work/exports.cfg
MATOML_LISTEN_HOST = 127.0.0.1
MATOML_LISTEN_PORT = $ml_port
MATOCS_LISTEN_HOST = 127.0.0.1
MATOCS_LISTEN_PORT = $cs_port
MATOCL_LISTEN_HOST = 127.0.0.1
MATOCL_LISTEN_PORT = $cl_port
CHANGELOG_SAVE_MODE = ${CHANGELOG_SAVE_MODE:-0}
CFG
    "$bin/moose-master" -c "$work/master.cfg" start >/dev/null
    for i in 1 2; do
        mkdir -p "$work/cs$i" "$work/disk$i"
        echo "$work/disk$i" > "$work/hdd$i.cfg"
        cat > "$work/cs$i.cfg" <<CFG
DATA_PATH = $work/cs$i
WORKING_USER = root
MASTER_HOST = 127.0.0.1
MASTER_PORT = $cs_port
CSSERV_LISTEN_HOST = 127.0.0.1
CSSERV_LISTEN_PORT = $(port)
HDD_CONF_FILENAME = $work/hdd$i.cfg
CFG
        "$bin/moose-chunkserver" -c "$work/cs$i.cfg" start >/dev/null
    done
    "$bin/moose-mount" "$mnt" -H 127.0.0.1 -P "$cl_port" ${MOUNT_OPTS:-} >/dev/null
    # As the stock side: deleted files are freed at once, not kept in the trash for a day.
    "$bin/moose-tool" settrashtime -r 0 "$mnt" >/dev/null
}

# stop_ours WORK MNT: unmounts and stops whatever start_ours started (safe to call twice).
stop_ours() {
    local work=$1 mnt=$2 c
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    for c in "$work"/cs*.cfg; do
        if [ -e "$c" ]; then "$bin/moose-chunkserver" -c "$c" stop >/dev/null 2>&1 || true; fi
    done
    if [ -e "$work/master.cfg" ]; then
        "$bin/moose-master" -c "$work/master.cfg" stop >/dev/null 2>&1 || true
    fi
}
