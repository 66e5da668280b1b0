# The official Mesos CLI (`mesos`, PyPI avmesos-cli 1.0.0) for tests/compat/test_mesos_cli.py.
# It lives in a virtualenv of its own: its metadata pulls in build and lint tools (PyInstaller,
# tox, isort ...) that it never imports, so it is installed with --no-deps next to the pinned
# packages it does import (requests, urllib3, toml, ujson, tenacity, kazoo, docopt).
# Sourced by scripts/setup.sh --test (uses $VPY, log, quiet).
AVMESOS_VENV="${BUTTE_AVMESOS_VENV:-/var/cache/butte-test/avmesos-venv}"
AVMESOS_PKGS=(
    avmesos-cli==1.0.0 requests==2.34.2 urllib3==2.8.0 idna==3.20 certifi==2026.10.19.post1
    charset-normalizer==3.5.3 ujson==6.1.0 tenacity==9.2.1 kazoo==2.11.0 six==1.17.0
    docopt==0.6.2 toml==0.10.2
)
if "$AVMESOS_VENV/bin/python" -c \
    "import importlib.metadata as m, sys; sys.exit(m.version('avmesos-cli') != '1.0.0')" \
    >/dev/null 2>&1; then
    log "avmesos-cli 1.0.0 already in $AVMESOS_VENV"
else
    log "installing avmesos-cli 1.0.0 into $AVMESOS_VENV"
    mkdir -p "$(dirname "$AVMESOS_VENV")"
    quiet "$VPY" -m venv --clear "$AVMESOS_VENV"
    quiet "$AVMESOS_VENV/bin/python" -m pip --quiet install --no-deps "${AVMESOS_PKGS[@]}"
    "$AVMESOS_VENV/bin/python" -c "import avmesos.cli.mesos" || die "avmesos-cli does not import"
fi
