"""``butte spark-submit``: run a Spark application on a Spark standalone cluster launched on
demand as butte tasks.

Flow: SUBSCRIBE -> offers become a Spark master task and worker tasks (`SparkPlan` decides)
-> the master's web UI becomes the framework's ``webui_url`` -> once the master reports a
registered worker, Spark's own ``spark-submit`` runs here as the driver (client deploy mode)
against ``spark://master``, its output streaming to ours, while later offers add workers up
to the requested cores -> when the driver exits, every task is killed, the framework torn
down, and the driver's exit status is ours. A lost master (or workers that never start)
stops the driver (exit 1); Ctrl-C stops it too (exit 130, SIGTERM 143); the cluster is always
torn down. See docs/spark.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import getpass
import os
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from butte.cli.common import CliError
from butte.client.operator import MasterUnreachable as OperatorUnreachable
from butte.client.operator import OperatorError
from butte.client.scheduler import (
    CallError,
    MasterUnreachable,
    SchedulerClient,
    SchedulerError,
    SubscriptionError,
)
from butte.core.parent_death import die_with_parent
from butte.core.resources import ResourceError
from butte.frameworks.offers import (
    FitWatch,
    local_address_for,
    offer_view,
    read_agent_capacities,
    task_resources,
)
from butte.frameworks.spark.plan import Launch, SparkPlan, SparkRequest, memory_mib

SUMMARY = "run a Spark application on a Spark standalone cluster launched as tasks"
DESCRIPTION = (
    "Launches a Spark standalone master and workers as tasks sized from offers, runs the "
    "application with Spark's spark-submit here (client mode) as soon as a worker is up, "
    "adds workers until --total-executor-cores are reached, streams the driver's output, "
    "exits with its status and always tears the Spark cluster down. Options after APP go "
    "to the application."
)
# spark-submit options that take a value and pass through unchanged.
_PASS_VALUE = (
    ("--class", "main class of a Java/Scala application"),
    ("--name", "application name"),
    ("--jars", "comma-separated jars for the driver and executor classpaths"),
    ("--packages", "comma-separated Maven coordinates of jars to include"),
    ("--exclude-packages", "groupId:artifactId to exclude from --packages"),
    ("--repositories", "extra remote repositories for --packages"),
    ("--py-files", "comma-separated .zip, .egg or .py files for the PYTHONPATH"),
    ("--files", "comma-separated files placed in each executor's working directory"),
    ("--archives", "comma-separated archives extracted in each executor's directory"),
    ("--properties-file", "file of extra Spark properties"),
    ("--driver-java-options", "extra Java options for the driver"),
    ("--driver-library-path", "extra library path for the driver"),
    ("--driver-class-path", "extra class path for the driver"),
    ("--proxy-user", "user to impersonate when submitting"),
)
_KILL_WAIT_SECONDS = 15.0
_DRIVER_GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.5
# The daemons are not performance-critical: a client-only JIT and the serial collector make
# their JVMs start faster on small machines.
_DAEMON_JAVA_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

Writer = Callable[[str], None]


def _conf_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _memory(text: str) -> str:
    try:
        memory_mib(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def default_spark_home() -> str | None:
    """The Spark distribution inside the installed ``pyspark`` package, if any."""
    with contextlib.suppress(ImportError):
        import pyspark

        return str(Path(pyspark.__file__).parent)
    return None


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Defines the ``butte spark-submit`` flags: butte's own, then spark-submit's."""
    parser.add_argument(
        "--master",
        required=True,
        help="butte master to run the Spark cluster on, HOST:PORT or zk://.../path",
    )
    parser.add_argument("--role", default="*", help="role to subscribe with")
    parser.add_argument("--framework_name", default=None, help="default: spark: APP")
    parser.add_argument(
        "--spark_home",
        default=None,
        help="Spark distribution on the agents and here (default: the installed pyspark's)",
    )
    parser.add_argument("--java_home", default=None, help="JAVA_HOME for the Spark daemons")
    parser.add_argument(
        "--daemon_memory", type=_memory, default="512m", help="heap of the master and workers"
    )
    parser.add_argument(
        "--connect_timeout", type=float, default=10.0, help="seconds to reach the master"
    )
    parser.add_argument(
        "--startup_timeout",
        type=float,
        default=600.0,
        help="seconds to wait for the first Spark worker to register before giving up",
    )
    spark = parser.add_argument_group("spark-submit options")
    spark.add_argument(
        "--deploy-mode",
        choices=["client"],
        default="client",
        help="only client: the driver runs here, the executors on the agents",
    )
    spark.add_argument(
        "--total-executor-cores",
        type=_positive_int,
        default=None,
        help="cores for all executors together (default: spark.cores.max, else 2)",
    )
    spark.add_argument(
        "--executor-cores",
        type=_positive_int,
        default=None,
        help="cores per executor (default: one executor per worker with all its cores)",
    )
    spark.add_argument(
        "--executor-memory", type=_memory, default=None, help="memory per executor (1g)"
    )
    spark.add_argument("--driver-memory", type=_memory, default=None, help="driver memory")
    spark.add_argument(
        "--conf",
        "-c",
        action="append",
        type=_conf_pair,
        default=[],
        metavar="KEY=VALUE",
        help="Spark property (repeatable)",
    )
    for flag, text in _PASS_VALUE:
        spark.add_argument(flag, default=None, help=text)
    spark.add_argument("--verbose", "-v", action="store_true", help="spark-submit's --verbose")
    parser.add_argument("app", metavar="APP", help="application: a .py file or a jar")
    parser.add_argument("app_args", nargs=argparse.REMAINDER, metavar="ARGS")


@dataclass(frozen=True)
class SubmitSpec:
    """What to run: the parsed flags."""

    master: str
    role: str
    framework_name: str
    spark_home: str
    java_home: str | None
    request: SparkRequest
    submit_options: tuple[str, ...]  # spark-submit's options, without --master
    app: str
    app_args: tuple[str, ...]
    connect_timeout: float = 10.0
    startup_timeout: float = 600.0


def spec_from_args(args: argparse.Namespace) -> SubmitSpec:
    """Checks the flags; CliError (status 2) for what cannot run."""
    spark_home = args.spark_home or default_spark_home()
    if not spark_home or not (Path(spark_home) / "bin" / "spark-submit").exists():
        raise CliError(
            "no Spark distribution: install the spark extra (pip install butte[spark]) "
            "or give --spark_home",
            2,
        )
    conf = dict(args.conf)
    try:
        total = args.total_executor_cores or int(conf.get("spark.cores.max", 2))
        executor_cores = args.executor_cores or (
            int(conf["spark.executor.cores"]) if "spark.executor.cores" in conf else None
        )
        executor_memory = args.executor_memory or conf.get("spark.executor.memory", "1g")
        request = SparkRequest(
            total_cores=total,
            executor_mib=memory_mib(executor_memory),
            executor_cores=executor_cores,
            daemon_mib=memory_mib(args.daemon_memory),
        )
    except ValueError as e:
        raise CliError(str(e), 2) from None
    if "spark.master" in conf:
        raise CliError("spark.master is set by butte spark-submit; do not pass it", 2)
    options: list[str] = ["--deploy-mode", "client", "--total-executor-cores", str(total)]
    if executor_cores:
        options += ["--executor-cores", str(executor_cores)]
    options += ["--executor-memory", executor_memory]
    if args.driver_memory:
        options += ["--driver-memory", args.driver_memory]
    for flag, _ in _PASS_VALUE:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            options += [flag, value]
    for key, value in args.conf:
        options += ["--conf", f"{key}={value}"]
    if args.verbose:
        options.append("--verbose")
    return SubmitSpec(
        master=args.master,
        role=args.role,
        framework_name=args.framework_name or f"spark: {args.name or Path(args.app).name}",
        spark_home=spark_home,
        java_home=args.java_home,
        request=request,
        submit_options=tuple(options),
        app=args.app,
        app_args=tuple(args.app_args),
        connect_timeout=args.connect_timeout,
        startup_timeout=args.startup_timeout,
    )


def run(args: argparse.Namespace) -> int:
    """The ``butte spark-submit`` entry point."""
    return asyncio.run(SparkSubmit(spec_from_args(args)).run())


def _info(line: str) -> None:
    print(f"butte spark-submit: {line}", file=sys.stderr, flush=True)


class SparkSubmit:
    """One ``butte spark-submit``: the framework, the Spark cluster and the driver."""

    def __init__(self, spec: SubmitSpec, info: Writer = _info) -> None:
        self.spec = spec
        self.info = info
        self.plan = SparkPlan(uuid.uuid4().hex[:8], spec.request)
        self.client: SchedulerClient | None = None
        self.driver: asyncio.subprocess.Process | None = None
        self.hostnames: dict[str, str] = {}
        self.suppressed = False
        self.told_webui = False
        self.cluster_failed: asyncio.Future[str] | None = None
        self.fail_status = 1  # the exit status of a failed cluster (2: it cannot run at all)
        self.started = time.monotonic()
        self.fit = FitWatch(started=self.started)

    # -- the whole run ---------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.cluster_failed = loop.create_future()
        self.client = SchedulerClient(
            self.spec.master,
            self._framework_info(),
            retry_timeout=self.spec.connect_timeout,
            backoff_max=1.0,
        )
        try:
            await self.client.subscribe()
        except (MasterUnreachable, SubscriptionError) as e:
            await self.client.close()
            raise CliError(f"cannot subscribe to {self.spec.master}: {e}", 2) from None
        self.info(f"subscribed as framework {self.client.framework_id}")
        interrupted: asyncio.Future[int] = loop.create_future()
        installed = _install_signal_handlers(interrupted)
        pump = asyncio.create_task(self._pump())
        watch = asyncio.create_task(self._watch_fit())
        try:
            return await self._run_app(interrupted)
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            await self._stop_driver()
            await self._tear_down(pump)
            _remove_signal_handlers(installed)

    async def _run_app(self, interrupted: asyncio.Future[int]) -> int:
        """Waits for a worker, runs the driver to its end; returns the exit status."""
        assert self.cluster_failed is not None
        ready = asyncio.ensure_future(self._wait_first_worker())
        waiting: set[asyncio.Future[Any]] = {ready, self.cluster_failed, interrupted}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready
            return self._why_stopped(interrupted)
        if not ready.result():
            self.info(
                f"no Spark worker registered within {self.spec.startup_timeout:g}s; giving up"
            )
            return 1
        self.driver = await self._start_driver()
        exited = asyncio.ensure_future(self.driver.wait())
        waiting = {exited, self.cluster_failed, interrupted}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            status = exited.result()
            self.info(f"driver exited with status {status}; tearing the Spark cluster down")
            return status if status >= 0 else 128 - status
        exited.cancel()  # _stop_driver waits for the driver itself
        return self._why_stopped(interrupted)

    def _why_stopped(self, interrupted: asyncio.Future[int]) -> int:
        if interrupted.done():
            self.info("interrupted; stopping the driver and the Spark cluster")
            return interrupted.result()
        assert self.cluster_failed is not None and self.cluster_failed.done()
        if self.fail_status == 2:
            self.info(f"error: {self.cluster_failed.result()}")
        else:
            self.info(f"the Spark cluster failed: {self.cluster_failed.result()}")
        return self.fail_status

    # -- the Spark cluster -----------------------------------------------------------------

    def _framework_info(self) -> dict[str, Any]:
        return {
            "user": getpass.getuser(),
            "name": self.spec.framework_name,
            "role": self.spec.role,
            "failover_timeout": 0.0,  # our tasks go when this process does
            "capabilities": [{"type": "TASK_KILLING_STATE"}],
        }

    async def _wait_first_worker(self) -> bool:
        """Polls the Spark master's status until a worker is ALIVE; False on timeout."""
        deadline = self.started + self.spec.startup_timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                status = await self._master_status(session)
                if status and status.get("aliveworkers", 0) >= 1:
                    self.info(
                        f"{status['aliveworkers']} Spark worker(s) registered after "
                        f"{time.monotonic() - self.started:.1f}s; starting the driver"
                    )
                    return True
                await asyncio.sleep(_POLL_SECONDS)
        return False

    async def _master_status(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        if not self.plan.master_running or self.plan.webui_url is None:
            return None
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with session.get(f"{self.plan.webui_url}/json/", timeout=timeout) as response:
                if response.status != 200:
                    return None
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def _pump(self) -> None:
        """Handles the master's events for the whole run."""
        assert self.client is not None
        try:
            async for event in self.client:
                await self._handle(event)
        except SchedulerError as e:
            self._fail(f"lost the butte master: {e}")
            return
        self._fail("the butte master ended the subscription")

    def _fail(self, reason: str, status: int = 1) -> None:
        if self.cluster_failed is not None and not self.cluster_failed.done():
            if not self.plan.closed:
                self.fail_status = status
                self.cluster_failed.set_result(reason)

    def _waiting_for_offers(self) -> bool:
        """Whether the start-up waits for offers: for the master, or for a first worker."""
        if self.driver is not None or self.plan.failed or self.plan.closed:
            return False
        return self.plan.master is None or not self.plan.workers

    async def _watch_fit(self) -> None:
        """Until the first worker is placed: says every little while what the start-up
        waits for and the largest offer seen, and gives up (exit 2) once the registered
        agents could never hold the Spark master and a worker with one executor, as read
        from the master's GET_AGENTS (`butte.frameworks.offers.FitWatch`)."""
        assert self.client is not None
        while True:
            now = time.monotonic()
            if not self._waiting_for_offers():
                await asyncio.sleep(1.0)
                continue
            if self.fit.note_due(now):
                self.info(
                    f"waiting for {self.plan.waiting_for()}; {self.fit.largest.describe()}"
                    f"{self.fit.capacity_note()}"
                )
            if self.fit.check_due(now):
                await self._check_capacity()
            await asyncio.sleep(0.5)

    async def _check_capacity(self) -> None:
        assert self.client is not None
        try:
            agents = await asyncio.to_thread(
                read_agent_capacities,
                self.spec.master,
                self.client.leader,
                self.spec.role,
                reserved=False,  # offer_view takes unreserved resources only
            )
        except (OperatorUnreachable, OperatorError, ValueError) as e:  # ValueError: not JSON
            if self.fit.unreadable is None:
                self.fit.unreadable = str(e)
                self.info(
                    f"cannot read the cluster's agents ({e}); waiting for offers without "
                    "knowing whether any agent could hold the Spark cluster"
                )
            return
        if not self._waiting_for_offers():
            return
        views = [agent.view() for agent in agents]
        give_up = self.fit.judged(self.plan.shortfall(views), len(views))
        if give_up is not None:
            self._fail(
                f"the application cannot run on this cluster: {give_up}; "
                f"{self.fit.largest.describe()}",
                2,
            )

    async def _handle(self, event: dict[str, Any]) -> None:
        assert self.client is not None
        kind = event["type"]
        if kind == "OFFERS":
            for offer in event["offers"].get("offers", []):
                await self._use_offer(offer)
            await self._sync_offers()
        elif kind == "UPDATE":
            await self._on_update(event["update"]["status"])
        elif kind == "SUBSCRIBED" and self.plan.live_tasks():
            await self.client.reconcile(list(self.plan.live_tasks().items()))
        elif kind == "FAILURE" and "executor_id" not in event.get("failure", {}):
            agent = event["failure"].get("agent_id", {}).get("value", "?")
            self.info(f"agent {self.hostnames.get(agent, agent)} was lost")
        elif kind == "ERROR":
            self._fail(event.get("error", {}).get("message", "master error"))

    async def _use_offer(self, offer: dict[str, Any]) -> None:
        assert self.client is not None
        try:
            view = offer_view(offer, self.spec.role)
        except ResourceError as e:
            self.info(f"ignoring offer {offer['id']['value']}: {e}")
            launches: list[Launch] = []
        else:
            self.hostnames[view.agent_id] = view.hostname
            self.fit.largest.saw(view)
            launches = self.plan.place(view)
        try:
            if launches:
                tasks = [self._task_info(launch, view.role) for launch in launches]
                await self.client.launch(offer, tasks, refuse_seconds=1.0)
            else:
                refuse = 1.0 if self.plan.wants_offers() else 60.0
                await self.client.decline([offer], refuse_seconds=refuse)
        except CallError as e:
            self.info(f"warning: {e}")
            for launch in launches:
                self.plan.update(launch.name, "TASK_ERROR")
            self._check_failed()
            return
        for launch in launches:
            what = f"{launch.cores} cores" if launch.role == "worker" else launch.ports[0]
            self.info(f"launching Spark {launch.role} {launch.name} on {launch.hostname} ({what})")
        if any(launch.role == "master" for launch in launches):
            await self._announce_webui()

    async def _announce_webui(self) -> None:
        """Prints the Spark master's web UI and links it from butte's framework page."""
        assert self.client is not None
        url = self.plan.webui_url
        self.info(f"Spark master {self.plan.master_url}, web UI {url}")
        info = dict(self.client.framework_info)
        info["webui_url"] = url
        try:
            await self.client.update_framework(info)
        except CallError as e:
            self.info(f"warning: could not set the framework's web UI link: {e}")

    def _task_info(self, launch: Launch, role: str) -> dict[str, Any]:
        spark_class = shlex.quote(str(Path(self.spec.spark_home) / "bin" / "spark-class"))
        host = shlex.quote(launch.hostname)
        if launch.role == "master":
            line = (
                f"exec {spark_class} org.apache.spark.deploy.master.Master --host {host} "
                f"--port {launch.ports[0]} --webui-port {launch.ports[1]}"
            )
        else:
            master_url = shlex.quote(self.plan.master_url or "")
            line = (
                f"exec {spark_class} org.apache.spark.deploy.worker.Worker {master_url} "
                f"--host {host} --port {launch.ports[0]} --webui-port {launch.ports[1]} "
                f"--cores {launch.cores} --memory {launch.memory_mib}m "
                '--work-dir "$MESOS_SANDBOX/work"'
            )
        env = {
            "SPARK_HOME": self.spec.spark_home,
            "SPARK_LOCAL_IP": launch.hostname,
            "SPARK_DAEMON_MEMORY": f"{self.spec.request.daemon_mib}m",
            "SPARK_DAEMON_JAVA_OPTS": _DAEMON_JAVA_OPTS,
            "SPARK_NO_DAEMONIZE": "1",
        }
        if self.spec.java_home:
            env["JAVA_HOME"] = self.spec.java_home
        return {
            "name": f"spark {launch.role}",
            "task_id": {"value": launch.name},
            "agent_id": {"value": launch.agent_id},
            "resources": task_resources(launch.cpus, launch.mem, launch.ports, role),
            "command": {
                "shell": True,
                "value": line,
                "environment": {"variables": [{"name": k, "value": v} for k, v in env.items()]},
            },
        }

    async def _on_update(self, status: dict[str, Any]) -> None:
        assert self.client is not None
        name = status["task_id"]["value"]
        state = status["state"]
        lost_before = self.plan.lost_workers
        stray = self.plan.update(name, state)
        if state not in ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING") or stray:
            detail = status.get("message") or status.get("reason") or ""
            self.info(f"{name} {state} {detail}".rstrip())
        if self.plan.lost_workers > lost_before and self.plan.wants_offers():
            self.info(f"replacing Spark worker {name} ({self.plan.cores()} cores left)")
        if stray:
            with contextlib.suppress(SchedulerError):
                await self.client.kill(name, status.get("agent_id", {}).get("value"))
        with contextlib.suppress(CallError):
            await self.client.acknowledge_status(status)
        self._check_failed()
        await self._sync_offers()

    def _check_failed(self) -> None:
        if self.plan.failed:
            self._fail(self.plan.failed)

    async def _sync_offers(self) -> None:
        assert self.client is not None
        wanted = self.plan.wants_offers()
        try:
            if wanted and self.suppressed:
                self.suppressed = False
                await self.client.revive()
            elif not wanted and not self.suppressed:
                self.suppressed = True
                await self.client.suppress()
        except CallError as e:
            self.info(f"warning: {e}")

    # -- the driver ------------------------------------------------------------------------

    async def _start_driver(self) -> asyncio.subprocess.Process:
        spark_submit = str(Path(self.spec.spark_home) / "bin" / "spark-submit")
        argv = [spark_submit, "--master", self.plan.master_url or "", *self.spec.submit_options]
        argv += [self.spec.app, *self.spec.app_args]
        env = dict(os.environ)
        env["SPARK_HOME"] = self.spec.spark_home
        env.setdefault("PYSPARK_PYTHON", sys.executable)  # what the executors run too
        # The driver listens where the agents' executors can reach it.
        env.setdefault("SPARK_LOCAL_IP", local_address_for(self.spec.master))
        if self.spec.java_home:
            env["JAVA_HOME"] = self.spec.java_home
        # Its own session: our signal handling decides when the driver stops; and SIGTERM
        # when we die, as a driver that is the submitting process (plain spark-submit) would.
        return await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, signal.SIGTERM),
        )

    async def _stop_driver(self) -> None:
        """SIGTERM to the driver's process group, SIGKILL after a grace period."""
        driver = self.driver
        if driver is None or driver.returncode is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(driver.wait(), _DRIVER_GRACE_SECONDS)
                return

    async def _tear_down(self, pump: asyncio.Task[None]) -> None:
        """Kills every task, waits (briefly) for their last updates, tears the framework
        down; the teardown makes the master kill whatever is left."""
        assert self.client is not None
        for name, agent in self.plan.close().items():
            with contextlib.suppress(SchedulerError):
                await self.client.kill(name, agent)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_KILL_WAIT_SECONDS):
                while not self.plan.done() and not pump.done():
                    await asyncio.sleep(0.05)
        with contextlib.suppress(SchedulerError):
            await self.client.teardown()
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        await self.client.close()


def _install_signal_handlers(future: asyncio.Future[int]) -> list[signal.Signals]:
    """Resolves ``future`` with 130 on SIGINT, 143 on SIGTERM."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):

        def fire(sig: signal.Signals = sig) -> None:
            if not future.done():
                future.set_result(128 + int(sig))

        try:
            loop.add_signal_handler(sig, fire)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(sig)
    return installed


def _remove_signal_handlers(installed: list[signal.Signals]) -> None:
    loop = asyncio.get_running_loop()
    for sig in installed:
        loop.remove_signal_handler(sig)
