# Images in the mesos containerizer (tests/integration/test_images.py, bench/bench_images.py):
# Debian's busybox-static is the root filesystem of the test images (butte.testing.images
# builds it and its docker-save archives locally, cached under /var/cache/butte-test/images;
# nothing is pulled), and runc is the bound bench/bench_images.py measures against.
# Sourced by scripts/setup.sh --test (uses apt_install, log).
missing=()
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
else
    log "busybox-static and runc already installed"
fi
