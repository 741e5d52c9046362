#!/usr/bin/env bash
# tools/ui_chroot.sh SUITE  (SUITE = sid | trixie)
#
# Builds, once, a Debian chroot with the suite's own Blender and the X tools a real-UI test needs (Xvfb,
# xdotool, ImageMagick), and prints its folder on stdout. Debian's sid ships Blender 5.2 (Python 3.14),
# trixie ships 4.3 (Python 3.13).
#
# The chroot lives outside the clone, keyed by a hash of this script, so a change to the package list or the
# steps below rebuilds it: ${STYLEPASS_CACHE:-~/.cache/stylepass}/ui-chroot/<suite>-<hash>. A folder without
# `.complete` is a build that stopped half-way: it is removed and built again. Older builds of the same suite
# are removed once a new one is complete.
#
# Needs root (debootstrap, chroot, mount). Exit codes: 0 ok, 1 failure, 2 usage, 3 the Debian archive cannot
# provide this suite's Blender (no candidate, or it is not installable right now).
set -euo pipefail

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
CACHE="${STYLEPASS_CACHE:-$HOME/.cache/stylepass}"
BASE="$CACHE/ui-chroot"

log() { printf '[ui-chroot] %s\n' "$*" >&2; }
die() { printf '[ui-chroot] error: %s\n' "$*" >&2; exit "${2:-1}"; }

SUITE="${1:-}"
case "$SUITE" in
    sid | trixie) ;;
    *) die "usage: tools/ui_chroot.sh sid|trixie" 2 ;;
esac

# What goes into the chroot. sid's Blender 5.2 needs python3-cattr for its extension system.
PACKAGES=(blender xvfb xauth xdotool imagemagick python3-numpy python3-requests)
[ "$SUITE" = sid ] && PACKAGES+=(python3-cattr)

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and mount)"

HASH="$( (cat "$SELF"; echo "$SUITE") | sha256sum | cut -c1-12)"
DIR="$BASE/$SUITE-$HASH"

# mounts_under DIR -> mount points at or below DIR, deepest first.
mounts_under() {
    awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r
}

unmount_all() {
    local m
    for m in $(mounts_under "$1"); do
        umount "$m" 2>/dev/null || umount -l "$m" || true
    done
}

# remove_tree DIR: never rm -rf through a bind mount of the host's /dev, /proc or /sys.
remove_tree() {
    unmount_all "$1"
    [ -z "$(mounts_under "$1")" ] || die "still mounted under $1; not removing it"
    rm -rf --one-file-system "$1"
}

mkdir -p "$BASE"
exec 9>"$BASE/.$SUITE.lock"
flock 9

if [ -f "$DIR/.complete" ]; then
    echo "$DIR"
    exit 0
fi

START=$SECONDS
if [ -e "$DIR" ]; then
    log "removing a half-built $DIR"
    remove_tree "$DIR"
fi

# 1. debootstrap, with Debian's default mirror.
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap on the host"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } >&2 \
        || die "could not install debootstrap"
fi
log "debootstrap $SUITE into $DIR (a few minutes)"
mkdir -p "$DIR"
if ! debootstrap --variant=minbase "$SUITE" "$DIR" >"$BASE/.$SUITE-debootstrap.log" 2>&1; then
    tail -n 5 "$BASE/.$SUITE-debootstrap.log" >&2
    die "debootstrap $SUITE failed (log: $BASE/.$SUITE-debootstrap.log)"
fi
log "debootstrap done after $((SECONDS - START)) s"

# 2. Inside: apt settings for this machine (its clock may be behind the archive's Valid-Until), no services
# started by package scripts, then the packages.
cat >"$DIR/etc/apt/apt.conf.d/99stylepass" <<'EOF'
Acquire::Check-Valid-Until "false";
Acquire::Check-Date "false";
APT::Install-Recommends "false";
EOF
printf '#!/bin/sh\nexit 101\n' >"$DIR/usr/sbin/policy-rc.d"
# minbase has no /etc/mtab; Blender's file browser reads the mounted file systems from it.
ln -sf ../proc/self/mounts "$DIR/etc/mtab"
chmod +x "$DIR/usr/sbin/policy-rc.d"

trap 'unmount_all "$DIR"' EXIT
mount -t proc proc "$DIR/proc"
mount --bind /sys "$DIR/sys"
mount --bind /dev "$DIR/dev"

in_chroot() { chroot "$DIR" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"; }

in_chroot apt-get update -qq >&2 || die "apt-get update failed inside the $SUITE chroot"
CANDIDATE="$(in_chroot apt-cache policy blender | awk '/Candidate:/ { print $2 }')"
if [ -z "$CANDIDATE" ] || [ "$CANDIDATE" = "(none)" ]; then
    die "Debian $SUITE has no blender package right now" 3
fi
if ! SIM="$(in_chroot apt-get install -s -qq "${PACKAGES[@]}" 2>&1)"; then
    REASON="$(printf '%s\n' "$SIM" | grep -m1 -E '^(E:| .* : Depends:)' || true)"
    die "Debian $SUITE's blender $CANDIDATE is not installable right now: ${REASON:-apt-get install -s failed}" 3
fi
log "apt-get install ${PACKAGES[*]} (blender $CANDIDATE; several minutes)"
if ! in_chroot apt-get install -y -qq "${PACKAGES[@]}" >"$BASE/.$SUITE-apt.log" 2>&1; then
    tail -n 5 "$BASE/.$SUITE-apt.log" >&2
    die "apt-get install failed inside the $SUITE chroot (log: $BASE/.$SUITE-apt.log)"
fi
in_chroot apt-get clean

# 3. Record what was installed, for the session harness and reports.
in_chroot dpkg-query -W -f '${Version}\n' blender >"$DIR/.blender-version"
unmount_all "$DIR"
trap - EXIT
touch "$DIR/.complete"
log "built $DIR in $((SECONDS - START)) s (blender $(cat "$DIR/.blender-version"), $(du -sh --one-file-system "$DIR" | cut -f1))"

# 4. Older builds of this suite are dead weight (~1.5 GB each), unless a UI session (ui_session.py holds
# .session.lock) is still using one.
for old in "$BASE/$SUITE"-*; do
    if [ "$old" = "$DIR" ] || [ ! -d "$old" ]; then continue; fi
    if ! flock -n "$old/.session.lock" true; then
        log "keeping old $old: a UI session is using it"
        continue
    fi
    log "removing old $old"
    remove_tree "$old"
done

echo "$DIR"
