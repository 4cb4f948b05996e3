#!/usr/bin/env bash
# labs/01-identity/check.sh [WORKSPACE] [--stages LIST] [--cluster kind|existing|none] [--keep]
#
# The instructor check of lab 01 (the Identity service). WORKSPACE is the root
# of a trainee's copy (`cargo run -p xtask -- starter 01 --out DIR`); without
# it, this repository's finished code is graded.
#
#   build    the lab's crate and csictl compile
#   tests    the unit tests and the acceptance tests of labs/01-identity/tests
#   local    csi-lab01 on a temporary unix socket, called with csictl: the
#            commands of the chapter's Verification section
#   cluster  the driver in a kind cluster (the cluster checks come with lab 04)
#
# The hints name sections of the book chapter book/src/labs/01-identity.md.
# shellcheck source=labs/check-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../check-lib.sh"
# shellcheck source=labs/cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster-lib.sh"
# shellcheck source=labs/04-registration/cluster-checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/../04-registration/cluster-checks.sh"
check_init "$@"

PKG=lab01-identity
CH="chapter Lab 01"

# ------------------------------------------------------------------ build
BUILD_FAILED=0
if stage build "compile the workspace"; then
  check "cargo build -p $PKG -p csictl --all-targets" \
    "read the first compiler error (cargo build -p $PKG): the starter compiles as generated, so it is in code you changed" \
    ws_cargo build -p "$PKG" -p csictl --all-targets || BUILD_FAILED=1
fi

# ------------------------------------------------------------------ tests
if stage tests "the lab's tests"; then
  check "unit tests: cargo test -p $PKG --lib" \
    "driver_names_follow_the_spec_rule fails until validate_driver_name is written ($CH, Step 2); read the failing test's name" \
    ws_cargo test -p "$PKG" --lib --no-fail-fast
  check "acceptance tests: tests/identity.rs" \
    "each failing test names an RPC: $CH, Steps 2-5 (name rule, GetPluginInfo, Probe, GetPluginCapabilities)" \
    ws_cargo test -p "$PKG" --test identity --no-fail-fast
fi

# ------------------------------------------------------------------ local
# The driver on a unix socket in the log directory, called with csictl: the
# commands of the chapter's Verification section, word for word, with
# $LOG_DIR in place of /tmp/lab01 and the binaries of $BIN_DIR on the PATH.

if stage local "csi-lab01 on a unix socket, called with csictl"; then
  SOCK=$LOG_DIR/csi.sock
  BACKEND=$LOG_DIR/backend
  export PATH=$BIN_DIR:$PATH
  export CSI_ENDPOINT=unix://$SOCK
  # The workspace's version: what GetPluginInfo must report.
  VERSION=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$WS/Cargo.toml" | head -n 1)
  VERSION_RE=${VERSION//./\\.}
  [[ -n $VERSION ]] || VERSION_RE='[0-9]+\.[0-9]+\.[0-9]+'

  if ((BUILD_FAILED)); then
    skip "the local stage" "the build failed: the binaries in $BIN_DIR are not this code's"
  elif [[ ! -x $(bin csi-lab01) || ! -x $(bin csictl) ]]; then
    skip "the local stage" "$(bin csi-lab01) or $(bin csictl) is missing: run the build stage first"
  else
    start_bg driver csi-lab01 --drivername csi.workshop.dev --backend-dir "$BACKEND"
    if ! check "csi-lab01 starts and listens on $SOCK" \
      "the driver exits or never binds: see its log $(bg_log driver) ($CH, Step 6)" \
      wait_for_socket "$SOCK" 20 driver; then
      skip "the other local checks" "the driver is not running"
    else
      check_output "GetPluginInfo names the driver csi.workshop.dev" \
        "get_plugin_info must return the configured name ($CH, Step 3)" \
        '^name: csi\.workshop\.dev$' csictl identity info
      check_output "GetPluginInfo reports the vendor version ${VERSION:-x.y.z}" \
        "vendor_version is the crate version the service was built with ($CH, Step 3)" \
        "^vendor_version: $VERSION_RE\$" csictl identity info
      check_output "GetPluginCapabilities advertises nothing (lab 01 serves no Controller)" \
        "csi-lab01 switches every capability off; advertise only what is switched on ($CH, Step 5)" \
        '^capabilities: \[\]$' csictl identity caps
      check_output "Probe answers ready: true while the backend directory is usable" \
        "probe must answer Some(true) when check_dir_usable succeeds ($CH, Step 4)" \
        '^ready: true$' csictl identity probe
      rm -r "$BACKEND"
      check_fails_with "Probe answers FailedPrecondition after the backend directory is removed" \
        "check_dir_usable must fail for a missing directory, and probe must then answer Status::failed_precondition, not ready: false (that means 'still starting') ($CH, Step 4)" \
        FailedPrecondition csictl identity probe
      check_fails_with "a Controller RPC (CreateVolume) answers Unimplemented" \
        "lab 01 serves no Controller service: the server must not register one ($CH, Step 1)" \
        Unimplemented csictl controller create --name vol-1 --size 64Mi
      check_fails_with "a Node RPC (NodeGetInfo) answers Unimplemented" \
        "lab 01 serves no Node service ($CH, Step 1)" \
        Unimplemented csictl node info
      stop_bg driver
      check_output "SIGTERM stops the driver and removes its socket" \
        "serve() must remove the socket once the shutdown signal completes ($CH, Step 6)" \
        '^socket removed$' sh -c "test -e '$SOCK' || echo 'socket removed'"
    fi
  fi
fi

# ------------------------------------------------------------------ cluster
if stage cluster "the driver in a Kubernetes cluster"; then
  cluster_stage_run cluster_checks_lab01
fi

finish
