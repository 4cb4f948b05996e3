# Shared by scripts/*.sh: installing what a fresh machine lacks.
# shellcheck shell=bash

# Installs Debian packages that provide the given commands, if any is missing.
# Usage: ensure_commands mkfs.ext4:e2fsprogs losetup:mount ...
ensure_commands() {
    local missing=() pair cmd pkg
    for pair in "$@"; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/sbin/$cmd" ] && ! [ -x "/usr/sbin/$cmd" ]; then
            missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]} (run as root, or install them yourself)" >&2
        return 1
    fi
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The packages the driver and its tests use on the host.
ensure_host_tools() {
    ensure_commands mkfs.ext4:e2fsprogs resize2fs:e2fsprogs losetup:mount mount:mount findmnt:util-linux
}

# Installs mdBook and the mermaid preprocessor with cargo, at pinned versions.
ensure_mdbook() {
    if ! command -v mdbook >/dev/null 2>&1 || ! mdbook --version | grep -q "v0.5.4"; then
        cargo install mdbook --version 0.5.4 --locked --quiet
    fi
    if ! command -v mdbook-mermaid >/dev/null 2>&1; then
        cargo install mdbook-mermaid --version 0.17.1 --locked --quiet
    fi
}

# kubectl renders the kustomizations the manifest checks validate (labs 04
# and 06) and drives the cluster stages. Workshop machines ship it; elsewhere
# try the distribution's package. Without it those steps say SKIP (never
# PASS), so say so up front rather than let it pass unnoticed.
ensure_kubectl() {
    command -v kubectl >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -eq 0 ] && apt-get install -y -qq kubectl >/dev/null 2>&1; then
        echo "installed kubectl: $(kubectl version --client 2>/dev/null | head -n 1)"
        return 0
    fi
    echo "WARNING: no kubectl and no package for it: the manifest checks and cluster stages will SKIP" >&2
}
