#!/usr/bin/env bash
# The README's test command: everything that runs without a cluster.
#   1. the workspace's unit and integration tests (real sockets, real loop
#      devices and mounts when run as root);
#   2. the book: build it and lint its includes and links;
#   3. the exercises, both sides: every starter compiles and fails its checks,
#      every solution passes them;
#   4. every lab's instructor check (build, tests, local; lab 04's also has a
#      "manifests" stage, which runs labs/04-registration/validate-manifests.sh:
#      every kustomization renders and validates against the Kubernetes
#      schema. It runs there, once, not as a separate step here. The cluster
#      stages say SKIP when there is no cluster). Its summary line ends the run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ensure_host_tools
ensure_kubectl
step() { printf '\n==== %s\n' "$*"; }

step "cargo test --workspace"
cargo test --workspace --quiet 2>&1 | tail -n 400

step "book: build and lint"
ensure_mdbook
cargo run --quiet -p xtask -- book-lint --strict
mdbook build book

step "exercises: starters fail, solutions pass"
bash labs/check-exercises.sh

# check-all.sh runs every stage of every lab, lab 04's "manifests" stage
# (validate-manifests.sh) included: don't add validate-manifests.sh here too.
step "instructor checks for every lab"
bash labs/check-all.sh --cluster "${CHECK_CLUSTER:-kind}"
