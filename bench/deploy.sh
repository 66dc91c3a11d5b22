#!/usr/bin/env bash
# Times moosectl over real SSH on network-namespace hosts (each its own OpenSSH sshd, see
# tests/src/netns.rs): one SSH command and one `scp` for scale, `deploy chunkserver` of a new
# build to 3 hosts, a full deploy to 1 host and to 10, and `start` to all gates green on 3
# and 4 hosts. Release build; each figure is the best of 3 runs. Prints a Markdown table.
# Needs root (namespaces, nft), sshd, scp and FUSE, as the test suite does.
#   bench/deploy.sh                 MOOSE_BENCH_RUNS=N bench/deploy.sh   (best of N)
# The hosts share this machine's cores and disk: N hosts cost about N times the CPU of one.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: run as root (network namespaces, FUSE)" >&2; exit 1; }
for tool in sshd scp nft; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
        { echo "bench: $tool is missing: apt-get install openssh-server openssh-client nftables" >&2; exit 1; }
done
cargo build --release --workspace --bins -q
echo "| what | time |"
echo "|---|---|"
out=$(cargo test --release -q -p moose-tests --test ssh_cluster -- --ignored --exact \
    bench_deploy_and_start --nocapture 2>&1) || { echo "$out" >&2; exit 1; }
grep '^|' <<<"$out"
