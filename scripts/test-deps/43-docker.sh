# Docker containerizer tests (tests/integration/test_docker.py): Debian's docker.io (dockerd,
# the client, containerd) and runc; the tests start their own private dockerd and build
# their images from busybox-static (butte/testing/images.py): nothing is pulled.
[ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] && command -v runc >/dev/null 2>&1 \
    || apt_install docker.io runc \
    || log "warning: could not install docker.io; the Docker containerizer tests cannot run"
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 \
    || apt_install busybox-static \
    || log "warning: could not install busybox-static; the image tests cannot run"
