# chronos-python 1.2.1 (PyPI, unmodified): the client of tests/compat/test_chronos_python.py.
# It is in the `test` extra too; this covers a venv whose stamp predates that line.
if ! "$VPY" -c 'import importlib.metadata as m; assert m.version("chronos-python") == "1.2.1"' \
    >/dev/null 2>&1; then
    log "installing chronos-python==1.2.1"
    quiet "${PIP[@]}" install "chronos-python==1.2.1" || die "cannot install chronos-python"
fi
