#!/bin/sh
# First boot of a BigBrotr appliance (run once by bigbrotr-firstboot.service, then disabled).
# Reads optional settings from the boot partition (FAT, editable from any computer):
#   bigbrotr/hostname        this device's hostname (default: bigbrotr-<4 hex of machine-id>)
#   bigbrotr/upstream.toml   an [upstream] section, appended to /etc/bigbrotr/config.toml
#   bigbrotr/env             BIGBROTR_DB_PASSWORD=... etc.; moved to /etc/bigbrotr/env (0600)
#                            and deleted from the boot partition (it holds secrets)
# The node key is generated on the device by the service's first start (ExecStartPre init).
set -eu
ROOT="${BIGBROTR_ROOT:-}"            # tests run it against a root directory
BOOT=""
for b in "$ROOT/boot/firmware" "$ROOT/boot"; do
    if [ -d "$b/bigbrotr" ] || [ -f "$b/config.txt" ]; then BOOT="$b"; break; fi
done
settings="${BOOT:+$BOOT/bigbrotr}"
conf="$ROOT/etc/bigbrotr/config.toml"

name=""
if [ -n "$settings" ] && [ -f "$settings/hostname" ]; then
    name="$(tr -cd 'a-zA-Z0-9-' < "$settings/hostname" | cut -c1-63)"
fi
if [ -z "$name" ]; then
    id="$(cat "$ROOT/etc/machine-id" 2>/dev/null || od -An -N2 -tx1 /dev/urandom | tr -d ' \n')"
    name="bigbrotr-$(printf '%s' "$id" | cut -c1-4)"
fi
echo "$name" > "$ROOT/etc/hostname"
if grep -q '^127\.0\.1\.1' "$ROOT/etc/hosts" 2>/dev/null; then
    sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$name/" "$ROOT/etc/hosts"
else
    printf '127.0.1.1\t%s\n' "$name" >> "$ROOT/etc/hosts"
fi

if [ -n "$settings" ] && [ -f "$settings/upstream.toml" ] && ! grep -q '^\[upstream\]' "$conf"; then
    { echo; cat "$settings/upstream.toml"; } >> "$conf"
fi
if [ -n "$settings" ] && [ -f "$settings/env" ]; then
    umask 077
    cat "$settings/env" >> "$ROOT/etc/bigbrotr/env"
    chmod 600 "$ROOT/etc/bigbrotr/env"
    rm -f "$settings/env"
fi

# Done: never again, and start the node (when systemd runs; not in a chroot).
rm -f "$ROOT/etc/systemd/system/multi-user.target.wants/bigbrotr-firstboot.service"
touch "$ROOT/var/lib/bigbrotr-firstboot.done"
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    hostname "$name" || true
    systemctl daemon-reload
    systemctl enable --now bigbrotr.service
fi
