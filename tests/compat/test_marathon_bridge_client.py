"""The unmodified PyPI ``marathon`` client (0.13.0) posting Docker apps with BRIDGE networking
and port mappings, in both of Marathon's forms (1.4: ``docker.network`` and
``docker.port_mappings``; 1.5: ``networks`` and ``container.port_mappings``), to `butte
marathon` on a real cluster whose agent runs them in a private Docker daemon with a bridge
(the integration test's, tests/integration/test_marathon_bridge_docker.py: the daemon, its
bridge and the ports it publishes live in a network namespace of the test's own); the apps
answer on their host ports, asked from inside that namespace, and the client, talking to
`butte marathon` on the host's loopback, reads them back."""

from __future__ import annotations

import collections
import collections.abc
from pathlib import Path

import pytest

from butte.testing.require import require_module
from tests.integration.test_marathon_bridge_docker import bridged_cluster, fetch

marathon = require_module("marathon")
from marathon.models import MarathonApp  # noqa: E402
from marathon.models.container import (  # noqa: E402
    MarathonContainer,
    MarathonContainerPortMapping,
    MarathonDockerContainer,
)

collections.Iterable = collections.abc.Iterable  # type: ignore[attr-defined]

pytestmark = [pytest.mark.compat, pytest.mark.integration]

SERVE = (
    "mkdir -p /www && echo $MARATHON_APP_ID $PORT0 > /www/index.html"
    " && exec httpd -f -p 8080 -h /www"
)


def test_the_client_posts_and_reads_bridged_apps_of_both_forms(tmp_path: Path) -> None:
    with bridged_cluster(tmp_path) as (d, image, _cluster, m):
        client = marathon.MarathonClient(m.url, timeout=20)
        mapping = MarathonContainerPortMapping(container_port=8080, host_port=0, name="web")
        old = MarathonApp(
            cmd=SERVE,
            cpus=0.1,
            mem=32,
            container=MarathonContainer(
                docker=MarathonDockerContainer(
                    image=image, network="BRIDGE", port_mappings=[mapping]
                )
            ),
        )
        new = MarathonApp(
            cmd=SERVE,
            cpus=0.1,
            mem=32,
            networks=[{"mode": "container/bridge"}],
            container=MarathonContainer(
                docker=MarathonDockerContainer(image=image), port_mappings=[mapping]
            ),
        )
        client.create_app("old", old)
        client.create_app("new", new)
        for app_id in ("/old", "/new"):
            m.wait_until(
                lambda a=app_id: client.get_app(a).tasks_running == 1, 60, f"{app_id} running"
            )
            app = client.get_app(app_id)
            assert app.networks == [{"mode": "container/bridge"}]
            [pm] = app.container.port_mappings
            assert (pm.container_port, pm.host_port, pm.name) == (8080, 0, "web")
            assert 10000 <= pm.service_port <= 20000
            [task] = client.list_tasks(app_id)
            [host_port] = task.ports
            assert task.service_ports == [pm.service_port]
            answer = m.wait_until(lambda p=host_port: fetch(d, p), 20, f"{app_id} answering")
            assert answer.split() == [app_id, str(host_port)]
        # the definition as the client read it, sent back: the same app, nothing restarted
        m.wait_until(lambda: not client.get_app("/new").deployments, 30, "no deployment")
        [task] = client.list_tasks("/new")
        client.update_app("/new", client.get_app("/new"))
        m.wait_until(lambda: not client.get_app("/new").deployments, 30, "no deployment")
        app = client.get_app("/new")
        assert app.container.port_mappings[0].service_port == pm.service_port
        assert [t.id for t in client.list_tasks("/new")] == [task.id]
