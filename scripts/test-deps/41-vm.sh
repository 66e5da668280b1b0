# VM framework tests (tests/integration/test_vm_framework.py): QEMU, a static busybox for
# the guest's initramfs (the tests build it), and a Debian kernel unpacked from its package
# with dpkg -x (never installed into /boot), cached in $BUTTE_TEST_CACHE/vm/vmlinuz.
command -v qemu-system-x86_64 >/dev/null 2>&1 || apt_install qemu-system-x86 \
    || log "warning: could not install qemu-system-x86; the VM tests cannot run"
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx cpio \
    || apt_install busybox-static \
    || log "warning: could not install busybox-static; the VM tests cannot run"
vm_kernel() {
    local cache="${BUTTE_TEST_CACHE:-/var/cache/butte-test}/vm" pkg tmp
    [ -s "$cache/vmlinuz" ] && return 0
    command -v apt-get >/dev/null 2>&1 || return 1
    # The package the linux-image-amd64 metapackage points at, e.g. linux-image-6.1.0-47-amd64.
    pkg="$(apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)"
    [ -n "$pkg" ] || return 1
    log "fetching kernel $pkg for the VM tests"
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/butte-vmkernel.XXXXXX")"
    chmod 755 "$tmp"  # apt's download user writes there
    ( cd "$tmp" && apt-get download -qq "$pkg" >/dev/null ) || { rm -rf "$tmp"; return 1; }
    dpkg -x "$tmp"/*.deb "$tmp/root" || { rm -rf "$tmp"; return 1; }
    mkdir -p "$cache"
    cp "$tmp"/root/boot/vmlinuz-* "$cache/vmlinuz.tmp" && mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
    echo "$pkg" >"$cache/vmlinuz.package"
    rm -rf "$tmp"
}
vm_kernel || log "warning: could not fetch a Debian kernel; the VM tests cannot run"
