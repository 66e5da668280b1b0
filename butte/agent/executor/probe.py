"""One TCP or HTTP health probe, run as its own process by the built-in executor
(`butte.agent.executor.health`). Exit status 0 means healthy.

    probe tcp <host> <port> <timeout>
    probe http <url> <timeout> [<comma-separated healthy statuses>]
    probe http-status <url> <timeout>     (for checks: prints the status code)

A timeout of 0 means none (``timeout_seconds: 0`` in Mesos: wait as long as it takes).

HTTPS probes do not verify the certificate (Mesos' ``curl -k``): they check the task answers.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

HEALTHY, UNHEALTHY, USAGE = 0, 1, 2


def tcp(host: str, port: int, timeout: float | None) -> int:
    """Healthy if a TCP connection to host:port opens within ``timeout``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return HEALTHY
    except OSError as e:
        sys.stderr.write(f"health check: cannot connect to {host}:{port}: {e}\n")
        return UNHEALTHY


def http(url: str, timeout: float | None, statuses: Sequence[int]) -> int:
    """Healthy if GET ``url`` answers with one of ``statuses`` (200-399 if none given)."""
    context = None
    if url.startswith("https:"):
        import ssl

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, headers={"User-Agent": "butte-health-check"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            code = response.status
    except urllib.error.HTTPError as e:
        code = e.code
    except (urllib.error.URLError, OSError) as e:
        sys.stderr.write(f"health check: GET {url} failed: {e}\n")
        return UNHEALTHY
    healthy = code in statuses if statuses else 200 <= code < 400
    if not healthy:
        sys.stderr.write(f"health check: GET {url} answered {code}\n")
    return HEALTHY if healthy else UNHEALTHY


def http_status(url: str, timeout: float | None) -> int:
    """For a check (not a health check): prints the status GET ``url`` answers with; exit
    status 1 when nothing answered."""
    request = urllib.request.Request(url, headers={"User-Agent": "butte-check"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            code = response.status
    except urllib.error.HTTPError as e:
        code = e.code
    except (urllib.error.URLError, OSError) as e:
        sys.stderr.write(f"check: GET {url} failed: {e}\n")
        return UNHEALTHY
    sys.stdout.write(f"{code}\n")
    sys.stdout.flush()
    return HEALTHY


def _timeout(text: str) -> float | None:
    """The socket timeout of a probe's TIMEOUT argument: None (no timeout) for 0."""
    return float(text) or None


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the probe ``argv`` describes (default: the command line)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["tcp"] and len(args) == 4:
            return tcp(args[1], int(args[2]), _timeout(args[3]))
        if args[:1] == ["http-status"] and len(args) == 3:
            return http_status(args[1], _timeout(args[2]))
        if args[:1] == ["http"] and len(args) in (3, 4):
            wanted = [int(s) for s in args[3].split(",") if s] if len(args) == 4 else []
            return http(args[1], _timeout(args[2]), wanted)
    except ValueError:
        pass
    sys.stderr.write("usage: probe tcp HOST PORT TIMEOUT | probe http URL TIMEOUT [STATUSES]\n")
    return USAGE


if __name__ == "__main__":
    sys.exit(main())
