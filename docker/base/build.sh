#!/usr/bin/env bash
# Build the local base image servingbench/base:bookworm without any registry:
# debootstrap a minimal Debian bookworm root with python3 + venv, then `docker import` it.
# Needs root, debootstrap and a running Docker engine. Skips when the image exists
# (FORCE=1 rebuilds). Usage: docker/base/build.sh [IMAGE] [MIRROR]
set -euo pipefail
IMAGE="${1:-servingbench/base:bookworm}"
MIRROR="${2:-http://deb.debian.org/debian}"
if [[ -z "${FORCE:-}" ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE exists (FORCE=1 to rebuild)"
    exit 0
fi
ROOT="$(mktemp -d /tmp/sb-base.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOT" "$MIRROR"
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/usr/share/doc/* \
    "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*
tar -C "$ROOT" -c . | docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$IMAGE"
echo "built $IMAGE"
