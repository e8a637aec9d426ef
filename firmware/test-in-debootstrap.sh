#!/usr/bin/env bash
# What can be tested of the appliance on an x86 machine without a Pi image: an arm64 Debian
# root from debootstrap (first stage; packages from deb.debian.org), the arm64 package installed
# into it by install-in-root.sh, the first-boot provisioning run against it with settings on its
# boot partition, and the installed binary run with the root's own arm64 libraries under qemu.
#   firmware/test-in-debootstrap.sh [ROOT]     (root; ROOT is reused if it exists)
# Needs: debootstrap, qemu-user-static, dpkg-deb, sfdisk (fdisk), mkfs.vfat (dosfstools), mtools,
# and the aarch64 build (scripts/cross-build).
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
ROOT="${1:-$work/root}"
if [ ! -d "$ROOT/etc" ]; then
    echo "debootstrap (arm64, first stage) into $ROOT" >&2
    debootstrap --arch=arm64 --foreign --variant=minbase bookworm "$ROOT" http://deb.debian.org/debian >/dev/null
fi
# A host that can run arm64 programs (binfmt) completes the root; otherwise install-in-root.sh
# uses the host's dpkg.
if [ -x "$ROOT/debootstrap/debootstrap" ] && chroot "$ROOT" /bin/true 2>/dev/null; then
    chroot "$ROOT" /debootstrap/debootstrap --second-stage >/dev/null
fi
deb="$(scripts/package-deb arm64 "$work")"
firmware/install-in-root.sh "$ROOT" "$deb"

boot="$ROOT/boot/firmware/bigbrotr"
mkdir -p "$boot"
echo "pi-test-1" > "$boot/hostname"
printf '[upstream]\ndatabase_url = "postgres://pi_test_1@archive.example.org:6432/bigbrotr"\n' > "$boot/upstream.toml"
echo "BIGBROTR_DB_PASSWORD=s3cret-from-boot" > "$boot/env"
BIGBROTR_ROOT="$ROOT" sh firmware/bigbrotr-firstboot.sh

fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(cat "$ROOT/etc/hostname")" = "pi-test-1" ] || fail "hostname"
grep -q "127.0.1.1.*pi-test-1" "$ROOT/etc/hosts" || fail "/etc/hosts"
grep -q '^\[upstream\]' "$ROOT/etc/bigbrotr/config.toml" || fail "upstream settings"
[ "$(stat -c %a "$ROOT/etc/bigbrotr/env")" = 600 ] || fail "env mode"
grep -q s3cret-from-boot "$ROOT/etc/bigbrotr/env" || fail "env content"
[ ! -e "$boot/env" ] || fail "secret left on the boot partition"
[ ! -e "$boot/upstream.toml" ] || fail "upstream settings left on the boot partition"
[ -L "$ROOT/etc/systemd/system/multi-user.target.wants/bigbrotr.service" ] || fail "node not enabled"
[ ! -e "$ROOT/etc/systemd/system/multi-user.target.wants/bigbrotr-firstboot.service" ] || fail "firstboot still enabled"
[ -e "$ROOT/var/lib/bigbrotr-firstboot.done" ] || fail "done marker"
grep -q "Storage=volatile" "$ROOT/etc/systemd/journald.conf.d/bigbrotr.conf" || fail "journald"
[ -f "$ROOT/lib/systemd/system/bigbrotr.service" ] || fail "unit"

# The installed binary, with the root's own libraries (ld.so, libc, libstdc++ from arm64 Debian).
run() { qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/bigbrotr" "$@"; }
run --version
sed "s|/var/lib/bigbrotr|$ROOT/var/lib/bigbrotr|" "$ROOT/etc/bigbrotr/config.toml" > "$work/config.toml"
printf '[seeder]\nenabled = false\n' >> "$work/config.toml"
run --config "$work/config.toml" init >/dev/null
[ -f "$ROOT/var/lib/bigbrotr/node.key" ] || fail "node key generated"
run --config "$work/config.toml" status --json | grep -q '"events_stored": 0' || fail "status"
echo "OK: arm64 root $ROOT: package installed, first boot provisioned, binary runs"

# The image path: a Pi-OS-shaped image (FAT boot + ext4 root made from a clean copy of the
# debootstrap root), customized by customize-image.sh, then read back.
img="$work/pi.img"
clean="$work/clean-root"
cp -a "$ROOT" "$clean"
rm -rf "$clean/usr/bin/bigbrotr" "$clean/etc/bigbrotr" "$clean/var/lib/bigbrotr"* "$clean/boot/firmware/bigbrotr"
printf 'proc /proc proc defaults 0 0\nPARTUUID=00000000-02 / ext4 defaults 0 1\n' > "$clean/etc/fstab"
truncate -s 1G "$img"
printf 'label: dos\nstart=8192, size=131072, type=c\nstart=139264, type=83\n' | sfdisk -q "$img"
mkfs.vfat -C -n BOOT "$work/boot.fat" 65536 >/dev/null
dd if="$work/boot.fat" of="$img" bs=512 seek=8192 conv=notrunc status=none
root_sectors="$(sfdisk -d "$img" | sed -n 's/.*2 : .*size= *\([0-9]*\).*/\1/p')"
mkfs.ext4 -q -F -E offset=$((139264 * 512)) -d "$clean" "$img" $((root_sectors / 2))
firmware/customize-image.sh "$img" "$deb" >/dev/null
mdir -i "$img@@$((8192 * 512))" ::/bigbrotr/README.txt >/dev/null || fail "boot partition README"
m="$work/mnt"; mkdir -p "$m"
mount -o loop,ro,offset=$((139264 * 512)),sizelimit=$((root_sectors * 512)) "$img" "$m"
trap 'umount "$m" 2>/dev/null || true' EXIT
[ -L "$m/etc/systemd/system/multi-user.target.wants/bigbrotr-firstboot.service" ] || fail "image: firstboot"
grep -q "ext4 defaults,noatime" "$m/etc/fstab" || fail "image: noatime"
qemu-aarch64-static -L "$m" "$m/usr/bin/bigbrotr" --version >/dev/null || fail "image: binary"
umount "$m"
echo "OK: image $img customized: package, first boot, noatime, boot-partition README"
rm -rf "$clean" "$img" "$work/boot.fat"
[ -n "${1:-}" ] || rm -rf "$work"   # a ROOT given on the command line is kept for reuse
