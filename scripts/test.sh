#!/usr/bin/env bash
# Runs every test: unit tests, and end-to-end tests with real daemons, a real FUSE mount and
# real OpenSSH servers in network namespaces (and sudo, for the non-root SSH logins). As root
# it installs the Debian packages the tests need; otherwise it says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(fuse3 openssh-server iproute2 nftables tmux fio sudo)
commands=(fusermount3 sshd ip nft tmux fio sudo)

missing=()
for i in "${!commands[@]}"; do
    command -v "${commands[$i]}" >/dev/null 2>&1 || [ -x "/usr/sbin/${commands[$i]}" ] || missing+=("${packages[$i]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "test.sh: missing packages: ${missing[*]}" >&2
        echo "test.sh: install them (apt-get install ${missing[*]}) or run this script as root" >&2
        exit 1
    fi
fi
if [ "$(id -u)" != 0 ]; then
    echo "test.sh: the end-to-end tests mount FUSE file systems and create network namespaces: run as root" >&2
    exit 1
fi
[ -e /dev/fuse ] || { modprobe fuse 2>/dev/null || true; }
[ -e /dev/fuse ] || { echo "test.sh: /dev/fuse is missing: this kernel has no FUSE" >&2; exit 1; }

export RUST_BACKTRACE=0
# Formatting and lints first: they fail fast, before minutes of building and testing. A Rust
# installed without rustfmt or clippy gets them from rustup when it can.
for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1 && command -v rustup >/dev/null; then
        rustup component add "$([ "$tool" = fmt ] && echo rustfmt || echo clippy)" >/dev/null 2>&1 || true
    fi
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        echo "test.sh: cargo $tool is missing and rustup cannot add it: the $tool check is NOT run" >&2
    fi
done
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all --check; fi
if cargo clippy --version >/dev/null 2>&1; then cargo clippy --workspace --all-targets -- -D warnings; fi
cargo build --workspace --bins
cargo test --workspace -- --test-threads=2
