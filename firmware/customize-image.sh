#!/usr/bin/env bash
# Turn a Raspberry Pi OS Lite (arm64) image into a BigBrotr appliance image, in place:
#   firmware/customize-image.sh raspios-bookworm-arm64-lite.img bigbrotr_<version>_arm64.deb
# Mounts the image's root (partition 2) through a loop device at its offset, runs
# install-in-root.sh on it, unmounts, and writes bigbrotr/README.txt to the boot partition
# (partition 1, FAT) with mtools. Flash the result; on first boot the
# appliance reads bigbrotr/{hostname,upstream.toml,env} from the boot partition (see
# firmware/README.md) and starts the node. Needs root (loop mount), sfdisk and mtools.
set -euo pipefail
img="$1"; deb="$2"
here="$(cd "$(dirname "$0")" && pwd)"
[ -f "$img" ] && [ -f "$deb" ] || { echo "usage: customize-image.sh IMAGE DEB" >&2; exit 2; }
# Partition start and size, in 512-byte sectors, from the image's partition table.
field() { sfdisk -d "$img" | sed -n "s/^[^ ]*$1 : .*$2= *\([0-9]*\).*/\1/p"; }
boot_start="$(field 1 start)"; boot_size="$(field 1 size)"
root_start="$(field 2 start)"; root_size="$(field 2 size)"
[ -n "$boot_start" ] && [ -n "$root_start" ] || { echo "customize-image: $img has no partitions 1 and 2" >&2; exit 1; }
mnt="$(mktemp -d)"
cleanup() { umount "$mnt" 2>/dev/null || true; rmdir "$mnt"; }
trap cleanup EXIT
mount -o loop,offset=$((root_start * 512)),sizelimit=$((root_size * 512)) "$img" "$mnt"
"$here/install-in-root.sh" "$mnt" "$deb"
sync
# The boot partition (FAT) is written with mtools, not mounted: no vfat driver needed.
fat="$img@@$((boot_start * 512))"
mmd -D s -i "$fat" ::/bigbrotr 2>/dev/null || true
readme="$(mktemp)"
cat > "$readme" <<'TXT'
BigBrotr appliance settings, read once at first boot (all optional):
  hostname       this device's name, e.g. bigbrotr-berlin-1
  upstream.toml  an [upstream] section (central archive), e.g.
                 [upstream]
                 database_url = "postgres://berlin_1@archive.example.org:6432/bigbrotr"
  env            BIGBROTR_DB_PASSWORD=...   (moved off this partition at first boot)
TXT
mcopy -o -i "$fat" "$readme" ::/bigbrotr/README.txt
rm -f "$readme"
echo "customize-image: $img is a BigBrotr appliance image"
