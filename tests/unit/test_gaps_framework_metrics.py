"""The per-framework metric names of Mesos' master (``master/frameworks/<name>/<id>/...``,
the name percent-encoded as libprocess' ``http::encode`` does) on the pure master core, and
their Prometheus rendering with names that look like the per-role pattern
(tests/integration/test_gaps_metrics.py serves them over HTTP)."""

from __future__ import annotations

from butte.master.metrics import framework_metric_prefix, master_metrics
from butte.operator_common import prometheus_text
from tests.unit.master_kit import Harness


def test_framework_names_are_percent_encoded_as_mesos_encodes_them():
    assert framework_metric_prefix("plain-name_1.x", "F1") == "master/frameworks/plain-name_1.x/F1/"
    assert framework_metric_prefix("a b/c~d%", "F1") == "master/frameworks/a%20b%2Fc%7Ed%25/F1/"
    # Bytes of UTF-8 above 0x7F and control characters are encoded; DEL is not (libprocess).
    assert framework_metric_prefix("é\t\x7f", "F") == "master/frameworks/%C3%A9%09\x7f/F/"


def test_every_framework_has_its_figures_and_prometheus_renders_them():
    h = Harness()
    h.register_agent("a1")
    fid, _ = h.subscribe("roles", roles=["r1", "r2"], capabilities=[{"type": "MULTI_ROLE"}])
    other, _ = h.subscribe("x y")
    h.master.frameworks[fid].suppressed_roles.add("r2")
    metrics = master_metrics(h.master, h.now())
    mine = f"master/frameworks/roles/{fid}/"
    assert metrics[mine + "subscribed"] == 1.0
    assert metrics[mine + "roles/r1/suppressed"] == 0.0
    assert metrics[mine + "roles/r2/suppressed"] == 1.0
    assert metrics[f"master/frameworks/x%20y/{other}/roles/*/suppressed"] == 0.0
    assert metrics[mine + "tasks/active/task_running"] == 0.0
    text = prometheus_text(metrics, "Mesos master metric").decode()
    assert "master_messages_reconcile_operations 0.0" in text
    assert "master_slave_shutdowns_canceled 0.0" in text
