# syntax=docker/dockerfile:1
#
# The workshop image: every binary of the workshop in one image,
# csi-workshop:0.1.0. The manifests pick the binary with `command:`.
#
#   docker build -t csi-workshop:0.1.0 .
#   kind load docker-image csi-workshop:0.1.0 --name csi-workshop
#
# (labs/cluster-lib.sh's cluster_build_and_load_image does both.)

# ANCHOR: builder
# Edition 2024 needs Rust 1.85 or newer; the workspace asks for 1.88.
FROM rust:1.90.0-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the crates.io downloads and the target directory
# between builds, so a rebuild after a code change takes seconds, not
# minutes. They are not part of the image, hence the copy to /out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    bins="csi-lab01 csi-lab02 csi-lab03 csi-registrar kubelet-sim csictl csi-provisioner-rs local-provisioner flex-workshop csi-migrate"; \
    args=""; \
    for b in $bins; do args="$args --bin $b"; done; \
    cargo build --release --locked $args; \
    mkdir -p /out; \
    for b in $bins; do cp "target/release/$b" /out/; done
# ANCHOR_END: builder

# ANCHOR: runtime
FROM debian:bookworm-20250908-slim
# What the node plugin runs besides its own code: mkfs.ext4 and resize2fs
# (e2fsprogs), mkfs.xfs and xfs_growfs (xfsprogs), blkid and losetup for
# debugging (util-linux), mount/umount (mount).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      e2fsprogs xfsprogs util-linux mount ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/ /usr/local/bin/
# Manifests always say which binary to run; without one, the full driver.
CMD ["csi-lab03"]
# ANCHOR_END: runtime
