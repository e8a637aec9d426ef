#!/bin/sh
# Turn a mounted Raspberry Pi OS (or any arm64 Debian) root into a BigBrotr appliance:
#   firmware/install-in-root.sh ROOT bigbrotr_<version>_arm64.deb
# Installs the package (dpkg inside the root, under qemu-user when the host is not arm64), the
# first-boot service, and SD-card-friendly settings: a size-capped volatile journal and noatime
# on ext4 mounts. The node itself starts on first boot, after bigbrotr-firstboot.
set -eu
ROOT="$1"; DEB="$2"
here="$(cd "$(dirname "$0")" && pwd)"
[ -d "$ROOT/etc" ] || { echo "install-in-root: $ROOT is not a root filesystem" >&2; exit 1; }
if [ "$(uname -m)" != "aarch64" ] && [ ! -x "$ROOT/usr/bin/qemu-aarch64-static" ] \
    && [ -x /usr/bin/qemu-aarch64-static ]; then
    cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"   # binfmt runs arm64 programs through it
    trap 'rm -f "$ROOT/usr/bin/qemu-aarch64-static"' EXIT
fi
if chroot "$ROOT" /bin/true 2>/dev/null; then
    cp "$DEB" "$ROOT/tmp/bigbrotr.deb"
    chroot "$ROOT" dpkg -i /tmp/bigbrotr.deb
    rm -f "$ROOT/tmp/bigbrotr.deb"
else
    # No way to run the root's programs (no binfmt for arm64 here): the host's dpkg installs
    # into the root and runs the maintainer scripts with the host's shell (they only talk to a
    # running systemd, which a root being prepared does not have).
    echo "install-in-root: cannot run programs inside $ROOT; installing with the host's dpkg" >&2
    DPKG_ROOT="$ROOT" dpkg --root="$ROOT" --force-architecture --force-script-chrootless \
        --force-depends -i "$DEB"
fi

install -D -m 0755 "$here/bigbrotr-firstboot.sh" "$ROOT/usr/lib/bigbrotr/firstboot"
install -D -m 0644 "$here/bigbrotr-firstboot.service" "$ROOT/lib/systemd/system/bigbrotr-firstboot.service"
mkdir -p "$ROOT/etc/systemd/system/multi-user.target.wants"
ln -sf /lib/systemd/system/bigbrotr-firstboot.service \
    "$ROOT/etc/systemd/system/multi-user.target.wants/bigbrotr-firstboot.service"
# The node itself is enabled now (the package's postinst cannot, with no systemd running): it
# starts at every boot, the first time right after bigbrotr-firstboot.
ln -sf /lib/systemd/system/bigbrotr.service \
    "$ROOT/etc/systemd/system/multi-user.target.wants/bigbrotr.service"

# SD card: keep the journal in RAM (capped), no access-time writes.
install -D -m 0644 /dev/stdin "$ROOT/etc/systemd/journald.conf.d/bigbrotr.conf" <<'JOURNAL'
[Journal]
Storage=volatile
RuntimeMaxUse=32M
JOURNAL
if [ -f "$ROOT/etc/fstab" ]; then
    sed -i -E '/^[^#].*[[:space:]]ext4[[:space:]]/{/noatime/!s/(ext4[[:space:]]+)([^[:space:]]+)/\1\2,noatime/}' "$ROOT/etc/fstab"
fi
echo "install-in-root: done; bigbrotr starts on first boot of $ROOT"
