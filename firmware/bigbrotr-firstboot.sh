#!/bin/sh
# First boot of a BigBrotr appliance (run once by bigbrotr-firstboot.service, then disabled).
# Reads optional settings from the boot partition (FAT, editable from any computer):
#   bigbrotr/hostname        this device's hostname (default: bigbrotr-<4 hex of machine-id>)
#   bigbrotr/upstream.toml   an [upstream] section, appended to /etc/bigbrotr/config.toml
#   bigbrotr/env             BIGBROTR_DB_PASSWORD=... etc.; moved to /etc/bigbrotr/env (0600)
#                            and deleted from the boot partition (it holds secrets)
# The node key is generated on the device by the service's first start (ExecStartPre init),
# which systemd runs right after this one (Before=bigbrotr.service; both are enabled).
set -eu
ROOT="${BIGBROTR_ROOT:-}"            # tests run it against a root directory
BOOT=""
for b in "$ROOT/boot/firmware" "$ROOT/boot"; do
    if [ -d "$b/bigbrotr" ] || [ -f "$b/config.txt" ]; then BOOT="$b"; break; fi
done
settings="${BOOT:+$BOOT/bigbrotr}"
conf="$ROOT/etc/bigbrotr/config.toml"

# Hostname: the one asked for on the boot partition; else, only if the image still has a
# stock name, bigbrotr-<4 hex of machine-id> (a name set with Raspberry Pi Imager is kept).
name=""
if [ -n "$settings" ] && [ -f "$settings/hostname" ]; then
    name="$(tr -cd 'a-zA-Z0-9-' < "$settings/hostname" | cut -c1-63)"
fi
current="$(cat "$ROOT/etc/hostname" 2>/dev/null || true)"
if [ -z "$name" ] && { [ -z "$current" ] || [ "$current" = raspberrypi ] || [ "$current" = localhost ]; }; then
    id="$(tr -cd '0-9a-f' < "$ROOT/etc/machine-id" 2>/dev/null || true)"
    [ -n "$id" ] || id="$(od -An -N2 -tx1 /dev/urandom | tr -cd '0-9a-f')"
    name="bigbrotr-$(printf '%s' "$id" | cut -c1-4)"
fi
if [ -n "$name" ]; then
    echo "$name" > "$ROOT/etc/hostname"
    if grep -q '^127\.0\.1\.1' "$ROOT/etc/hosts" 2>/dev/null; then
        sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$name/" "$ROOT/etc/hosts"
    else
        printf '127.0.1.1\t%s\n' "$name" >> "$ROOT/etc/hosts"
    fi
fi

if [ -n "$settings" ] && [ -f "$settings/upstream.toml" ]; then
    if ! grep -q '^\[upstream\]' "$conf"; then
        { echo; cat "$settings/upstream.toml"; } >> "$conf"
    fi
    rm -f "$settings/upstream.toml"   # off the world-readable boot partition
fi
if [ -n "$settings" ] && [ -f "$settings/env" ]; then
    umask 077
    cat "$settings/env" >> "$ROOT/etc/bigbrotr/env"
    chmod 600 "$ROOT/etc/bigbrotr/env"
    rm -f "$settings/env"
fi

# Done: never again. bigbrotr.service (enabled, ordered after this unit) starts next; calling
# systemctl start from here would wait on a job that waits on us.
rm -f "$ROOT/etc/systemd/system/multi-user.target.wants/bigbrotr-firstboot.service"
touch "$ROOT/var/lib/bigbrotr-firstboot.done"
if [ -z "$ROOT" ] && [ -n "$name" ]; then
    hostname "$name" || true
fi
