"""The agent operator calls of nested containers (docs/protocol.md "Nested containers"; the
containers themselves are `butte.agent.nested`):

- LAUNCH_NESTED_CONTAINER, LAUNCH_CONTAINER (with a parent), WAIT_/KILL_/REMOVE_NESTED_CONTAINER
  and WAIT_/KILL_/REMOVE_CONTAINER with a parent: plain JSON calls. WAIT_CONTAINER of a
  top-level container waits for its executor's end.
- LAUNCH_NESTED_CONTAINER_SESSION and ATTACH_CONTAINER_OUTPUT: streaming answers, RecordIO
  framed ProcessIO DATA records in JSON (base64 ``data``, STDOUT/STDERR; a TTY's output is
  all STDOUT), sent as ``Content-Type: application/recordio`` with ``Message-Content-Type:
  application/json``, or as ``Content-Type: application/json`` where ``Accept`` allows JSON
  (`stream_types`).
  A session's container is killed when its client goes away before it ended.
  ATTACH_CONTAINER_OUTPUT of a top-level task container follows its sandbox's stdout and
  stderr files from their current end until the container ends.
- ATTACH_CONTAINER_INPUT: a streaming request, RecordIO of agent Calls; the first names the
  container (``attach_container_input.type: CONTAINER_ID``), the others carry ProcessIO:
  DATA STDIN (empty data: end of input), CONTROL TTY_INFO (window size), CONTROL HEARTBEAT.
- After an agent restart (`NestedContainers.recover`): calls wait until the nested
  containers of the previous run are recovered; a recovered container's output is followed
  in its sandbox files, its input (and terminal) is the one its launcher kept and handed
  back (409 where the launcher could not).

Standalone containers (docs/protocol.md "Standalone containers"): LAUNCH_CONTAINER without
a parent runs its command outside any framework, in the agent's isolation (its cgroups,
limited by the call's ``resources``), with its sandbox at ``<work_dir>/containers/<id>``:
200 when launched, 202 when a container of that id runs already. WAIT_CONTAINER,
KILL_CONTAINER, REMOVE_CONTAINER (once it ended), ATTACH_CONTAINER_OUTPUT/INPUT and
GET_CONTAINERS (``show_standalone``) take it by its id; it survives an agent restart.

Authorization, as Mesos' agent checks it, the caller's principal against ``--acls`` (403
when refused): a nested container call (and an attach to any container) against its
`ACL_ACTIONS` action, with the user its top-level container's executor runs as for object;
the other calls about a container without a parent against their `STANDALONE_ACTIONS`
action (no object: ANY).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from butte.agent import paths
from butte.agent.launch_events import scalar_totals
from butte.agent.nested import (
    CLIENT_GONE,
    NestedContainer,
    NestedContainers,
    NestedError,
    Output,
    check_id,
    file_size,
    parse_command,
    read_from,
    window_size,
)
from butte.agent.records import COMMAND
from butte.core.codec import encode_json
from butte.core.messages import DecodeError
from butte.core.operator import OperatorCall, ProcessIO, decode_call
from butte.core.recordio import RecordIOReader
from butte.core.resources import ResourceError, Resources
from butte.master.acls import forbidden

if TYPE_CHECKING:
    from butte.agent.shell_api import AgentShell

RECORDIO = "application/recordio"
JSON = "application/json"
MAX_INPUT_RECORD = 1 << 20
FOLLOW_INTERVAL = 0.25
# How often a streaming answer looks whether its client is still there.
CLIENT_CHECK = 1.0

# Calls answered with a stream (`Streaming`): the request's Accept is checked first.
STREAMING_ANSWERS = frozenset({"LAUNCH_NESTED_CONTAINER_SESSION", "ATTACH_CONTAINER_OUTPUT"})

# The Mesos ACL action that guards each call (checked in `NestedApi.authorize`).
ACL_ACTIONS: dict[str, str] = {
    "LAUNCH_NESTED_CONTAINER": "launch_nested_containers",
    "LAUNCH_CONTAINER": "launch_nested_containers",
    "LAUNCH_NESTED_CONTAINER_SESSION": "launch_nested_container_sessions",
    "ATTACH_CONTAINER_INPUT": "attach_containers_input",
    "ATTACH_CONTAINER_OUTPUT": "attach_containers_output",
    "KILL_NESTED_CONTAINER": "kill_nested_containers",
    "WAIT_NESTED_CONTAINER": "wait_nested_containers",
    "WAIT_CONTAINER": "wait_nested_containers",
    "REMOVE_NESTED_CONTAINER": "remove_nested_containers",
    "REMOVE_CONTAINER": "remove_nested_containers",
}

# The Mesos ACL action of a call about a container without a parent (a standalone
# container, or a task's container), checked in `NestedApi.authorize`.
STANDALONE_ACTIONS: dict[str, str] = {
    "LAUNCH_CONTAINER": "launch_standalone_containers",
    "WAIT_CONTAINER": "wait_standalone_containers",
    "KILL_CONTAINER": "kill_standalone_containers",
    "REMOVE_CONTAINER": "remove_standalone_containers",
}
# The resources a standalone container may ask for: what the isolators enforce.
STANDALONE_RESOURCES = ("cpus", "mem", "disk")


class Streaming:
    """A call's answer written over time: `run` gets the request and writes the response."""

    def __init__(self, run: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.run = run


def _text(status: int, message: str = "") -> web.Response:
    return web.Response(status=status, text=message)


def process_io_record(kind: str, data: bytes) -> bytes:
    """One RecordIO record of a ProcessIO DATA message."""
    body = encode_json(
        {"type": "DATA", "data": {"type": kind, "data": base64.b64encode(data).decode()}}
    )
    return str(len(body)).encode() + b"\n" + body


def streaming_request(request: web.Request) -> bool:
    ctype = request.headers.get("Content-Type", "")
    return ctype.split(";", 1)[0].strip().lower() == RECORDIO


def accepts(header: str | None, media_type: str) -> bool:
    """Whether an ``Accept``-style header allows ``media_type``, as libprocess decides it:
    no header allows everything; else the most specific entry that matches (``type/sub``,
    then ``type/*``, then ``*/*``) decides, refusing with ``q=0``."""
    if header is None:
        return True
    entries = []
    for item in "".join(header.split()).split(","):
        name, *params = item.split(";")
        q = [p.partition("=")[2] for p in params if p.partition("=")[0] == "q"]
        entries.append((name.lower(), q))
    for candidate in (media_type, media_type.split("/")[0] + "/*", "*/*"):
        for name, q in entries:
            if name == candidate:
                if len(q) != 1:
                    return True
                try:
                    return float(q[0]) > 0
                except ValueError:
                    return False
    return False


def stream_types(request: web.Request) -> tuple[str, str | None] | web.Response:
    """A streaming answer's ``Content-Type`` and ``Message-Content-Type`` (None: not sent),
    chosen by the request's ``Accept`` as Mesos' agent chooses them: JSON where it is
    accepted (also with no ``Accept`` or ``*/*``, for older clients), its records still in
    RecordIO framing; else RecordIO of JSON messages (``Message-Accept`` must allow JSON).
    A 406 answer when neither can be given."""
    accept = request.headers.get("Accept")
    message_accept = request.headers.get("Message-Accept")
    if accepts(accept, JSON):
        if message_accept is not None:
            return _text(
                406, "Expecting 'Message-Accept' to be not set for non-streaming responses"
            )
        return JSON, None
    if not accepts(accept, RECORDIO):
        return _text(
            406, f"Expecting 'Accept' to allow {JSON} or {RECORDIO}, got '{str(accept)[:80]}'"
        )
    if not accepts(message_accept, JSON):
        return _text(406, f"Expecting 'Message-Accept' to allow {JSON}")
    return RECORDIO, JSON


def accept_problem(request: web.Request) -> web.Response | None:
    """The 406 answer of a streaming call whose ``Accept`` cannot be met (`stream_types`)."""
    chosen = stream_types(request)
    return chosen if isinstance(chosen, web.Response) else None


class NestedApi:
    """The calls of the module docstring, on one agent."""

    def __init__(self, server: AgentShell) -> None:
        self.server = server
        self.nested = NestedContainers.of(server)

    def authorize(self, request: web.Request, call: OperatorCall) -> web.Response | None:
        """403 when ``--acls`` refuse the caller's principal the call (None: allowed), as
        Mesos' agent checks them: a call about a nested container, and an attach to any,
        against its `ACL_ACTIONS` action, whose object is the user its top-level container's
        executor runs as (`_executor_user`); the others about a container without a parent
        against their `STANDALONE_ACTIONS` action (no object: only ANY objects match)."""
        payload = getattr(call, call.type.lower(), None)
        container_id = getattr(payload, "container_id", None)
        if container_id is None:
            return None
        acls = self.server.options.auth.acls
        action: str | None
        user: str | None = None
        if container_id.parent is None and call.type in STANDALONE_ACTIONS:
            action = STANDALONE_ACTIONS[call.type]
        else:  # a nested container, or attaching to any container
            action = ACL_ACTIONS.get(call.type)
            if action is None or acls.unrestricted(action):
                return None
            root = container_id
            while root.parent is not None:
                root = root.parent
            user = self._executor_user(root.value)
        if action is None:
            return None
        refusal = forbidden(acls, action, request.get("principal"), user)
        return _text(403, refusal) if refusal is not None else None

    def _executor_user(self, container_id: str) -> str | None:
        """The user the executor of top-level container ``container_id`` runs as: its
        CommandInfo's (a command task's own for the command executor), else its framework's
        (None: no such executor)."""
        machine = self.server.machine
        ex = machine.containers.get(container_id) if machine is not None else None
        if ex is None:
            return None
        commands = [ex.info.command]
        if ex.kind == COMMAND:
            commands += [t.info.command for t in ex.tasks.values()]
        for command in commands:
            if command is not None and command.user:
                return command.user
        fw = machine.frameworks.get(ex.framework_id) if machine is not None else None
        return fw.info.user if fw is not None else None

    def may_view_standalone(self, request: web.Request) -> bool:
        """Whether GET_CONTAINERS shows this caller standalone containers
        (``view_standalone_containers``)."""
        acls = self.server.options.auth.acls
        return forbidden(acls, "view_standalone_containers", request.get("principal")) is None

    def standalone(self, container_id: str) -> NestedContainer | None:
        """The standalone container ``container_id`` (None: there is none)."""
        container = self.nested.containers.get(container_id)
        return container if container is not None and container.standalone else None

    def containers_json(self, parents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """GET_CONTAINERS entries (``show_nested``) of the running nested containers, with
        the framework and executor of their parent among ``parents``."""
        by_id = {p["container_id"]["value"]: p for p in parents}
        out = []
        for container in self.nested.containers.values():
            parent = by_id.get(container.parent_id)
            if parent is None or not container.running:
                continue
            entry = {k: parent[k] for k in ("framework_id", "executor_id", "executor_name")}
            entry["container_id"] = {
                "value": container.container_id,
                "parent": {"value": container.parent_id},
            }
            status: dict[str, Any] = {"container_id": entry["container_id"]}
            if container.pid is not None:
                status["executor_pid"] = container.pid
            entry["container_status"] = status
            out.append(entry)
        return out

    # -- launch ------------------------------------------------------------------------------

    async def launch(
        self, payload: Any, *, session: bool, standalone: bool = False
    ) -> web.Response | Streaming:
        """LAUNCH_NESTED_CONTAINER(_SESSION), and LAUNCH_CONTAINER (``standalone``: it may
        have no parent)."""
        cid = payload.container_id
        if cid.parent is None:
            if not standalone:
                return _text(400, "Expecting 'container_id.parent' to be present")
            return await self._launch_standalone(payload)
        await self.nested.ready()
        if cid.parent.parent is not None:
            return _text(
                400, "nested containers of nested containers are not supported (one level only)"
            )
        if payload.resources or payload.limits:
            return _text(
                400,
                "resources and limits of nested containers are not supported: they share "
                "their parent's",
            )
        try:
            command = parse_command(payload.command, payload.container)
            container, new = await self.nested.launch(
                cid.value, cid.parent.value, command, session=session
            )
        except NestedError as e:
            return _text(e.status, e.message)
        if not session:
            return _text(200) if new else _text(202, "already launched")
        if not new:
            return _text(409, f"container {cid.value[:80]} exists already")
        queue = self.nested.attach_output(container)
        return Streaming(lambda request: self._stream(request, container, queue, session=True))

    async def _launch_standalone(self, payload: Any) -> web.Response:
        """LAUNCH_CONTAINER without a parent (module docstring)."""
        try:
            check_id(payload.container_id.value)
            if payload.limits:
                raise NestedError(
                    400, "limits of standalone containers are not supported: give resources"
                )
            resources = standalone_resources(payload.resources)
            command = parse_command(payload.command, payload.container)
            await self.nested.ready()
            _, new = await self.nested.launch_standalone(
                payload.container_id.value, command, resources
            )
        except NestedError as e:
            return _text(e.status, e.message)
        return _text(200) if new else _text(202, "already launched")

    # -- wait, kill, remove ------------------------------------------------------------------

    def _nested(self, payload: Any) -> NestedContainer:
        cid = payload.container_id
        check_id(cid.value)
        parent = cid.parent.value if cid.parent is not None else None
        return self.nested.get(cid.value, parent)

    async def wait(self, payload: Any) -> dict[str, Any] | web.Response:
        await self.nested.ready()
        try:
            if payload.container_id.parent is None:
                check_id(payload.container_id.value)
                standalone = self.standalone(payload.container_id.value)
                if standalone is not None:
                    return await self.nested.wait(standalone)
                return await self._wait_top_level(payload.container_id.value)
            return await self.nested.wait(self._nested(payload))
        except NestedError as e:
            return _text(e.status, e.message)

    async def _wait_top_level(self, container_id: str) -> dict[str, Any] | web.Response:
        containerizer = self.server.containerizer
        container = containerizer.containers.get(container_id) if containerizer else None
        if container is None:
            return _text(404, f"Container {container_id[:80]} not found")
        await container.exited.wait()
        out: dict[str, Any] = {}
        if container.exit_status is not None:
            out["exit_status"] = container.exit_status
        return out

    async def kill(self, payload: Any) -> web.Response | None:
        number = payload.signal if payload.signal is not None else int(signal.SIGKILL)
        if number not in {int(s) for s in signal.valid_signals()} or number == 0:
            return _text(400, f"Invalid signal {number}")
        await self.nested.ready()
        try:
            container = self._nested(payload)
        except NestedError as e:
            return _text(e.status, e.message)
        if payload.container_id.parent is None and not container.standalone:
            cid = container.container_id[:80]
            return _text(404, f"Container '{cid}' cannot be found (or is already killed)")
        if not container.running:
            # As Mesos' agent: an ended container is no longer the containerizer's to kill.
            cid = container.container_id[:80]
            return _text(404, f"Container '{cid}' cannot be found (or is already killed)")
        await asyncio.to_thread(self.nested.kill, container, number)
        return None

    async def remove(self, payload: Any) -> web.Response | None:
        await self.nested.ready()
        try:
            container = self._nested(payload)
            if payload.container_id.parent is None and not container.standalone:
                raise NestedError(400, "only nested and standalone containers can be removed")
            await self.nested.remove(container)
        except NestedError as e:
            return _text(e.status, e.message)
        return None

    # -- output ------------------------------------------------------------------------------

    async def attach_output(self, payload: Any) -> web.Response | Streaming:
        cid = payload.container_id
        await self.nested.ready()
        try:
            if cid.parent is None and cid.value not in self.nested.containers:
                check_id(cid.value)
                return self._follow_top_level(cid.value)
            container = self._nested(payload)
        except NestedError as e:
            return _text(e.status, e.message)
        if not container.running:
            # Mesos' containerizer fails an attach to a container that is gone (a 500).
            return _text(500, f"Unknown container {container.container_id[:80]}: it has ended")
        queue = self.nested.attach_output(container)
        return Streaming(lambda request: self._stream(request, container, queue, session=False))

    async def _stream(
        self,
        request: web.Request,
        container: NestedContainer,
        queue: asyncio.Queue[Output],
        *,
        session: bool,
    ) -> web.StreamResponse:
        """Writes ``queue`` as ProcessIO records until the output ends; a session's
        container is killed when the client is gone first."""
        ended = False
        response = _stream_response(request)
        try:
            await response.prepare(request)
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), CLIENT_CHECK)
                except TimeoutError:
                    if _client_gone(request):
                        break
                    ended = container.output_done.is_set() and queue.empty()
                    if ended:
                        break
                    continue
                if item is None:
                    ended = True
                    break
                await response.write(process_io_record(*item))
            await response.write_eof()
        except (ConnectionError, RuntimeError):  # the client went away mid-write
            pass
        finally:
            self.nested.detach_output(container, queue)
            if session and not ended:
                container.message = CLIENT_GONE
                self.nested.kill(container)
        return response

    def _follow_top_level(self, container_id: str) -> web.Response | Streaming:
        """ATTACH_CONTAINER_OUTPUT of a task's container: its sandbox files, followed."""
        containerizer = self.server.containerizer
        machine = self.server.machine
        container = containerizer.containers.get(container_id) if containerizer else None
        executor = None
        if machine is not None:
            executor = next(
                (e for e in machine.executors() if e.container_id == container_id), None
            )
        if container is None or executor is None:
            return _text(404, f"Container {container_id[:80]} not found")
        sandbox = executor.sandbox

        async def run(request: web.Request) -> web.StreamResponse:
            files = {
                "STDOUT": paths.stdout_path(sandbox),
                "STDERR": paths.stderr_path(sandbox),
            }
            offsets = {kind: file_size(path) for kind, path in files.items()}
            response = _stream_response(request)
            await response.prepare(request)
            try:
                while not _client_gone(request):
                    done = container.exited.is_set()
                    for kind, path in files.items():
                        data = await asyncio.to_thread(read_from, path, offsets[kind])
                        if data:
                            offsets[kind] += len(data)
                            await response.write(process_io_record(kind, data))
                    if done:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(container.exited.wait(), FOLLOW_INTERVAL)
                await response.write_eof()
            except (ConnectionError, RuntimeError):
                pass
            return response

        return Streaming(run)

    # -- input -------------------------------------------------------------------------------

    async def attach_input(self, request: web.Request) -> web.StreamResponse:
        """A streaming ATTACH_CONTAINER_INPUT request (module docstring)."""
        message_type = request.headers.get("Message-Content-Type", "")
        if message_type.split(";", 1)[0].strip().lower() != JSON:
            return _text(415, f"Expecting 'Message-Content-Type' of {JSON}")
        reader = RecordIOReader(max_record=MAX_INPUT_RECORD)
        records: list[bytes] = []
        try:
            first = await _next_record(request, reader, records)
            if first is None:
                return _text(400, "Expecting a first record naming the container")
            call = _input_call(first)
            payload = call.attach_container_input
            assert payload is not None
            if payload.type != "CONTAINER_ID" or payload.container_id is None:
                return _text(400, "The first record must be of type CONTAINER_ID")
            refused = self.authorize(request, call)
            if refused is not None:
                return refused
            await self.nested.ready()
            cid = payload.container_id
            check_id(cid.value)
            if cid.parent is None and cid.value not in self.nested.containers:
                containerizer = self.server.containerizer
                if containerizer is not None and cid.value in containerizer.containers:
                    return _text(
                        400,
                        f"container {cid.value[:80]} has no input to attach to: tasks run "
                        "without a TTY; launch a nested container session instead",
                    )
            container = self.nested.get(cid.value, cid.parent.value if cid.parent else None)
            if not container.running:
                # 500 as Mesos answers it: its CLI takes a 500 to mean "ended already".
                return _text(500, f"container {cid.value[:80]} has ended")
            if container.input_attached:
                return _text(409, "Multiple input connections are not allowed")
            if container.input_lost:
                # Its launcher did not hand the input end back after the agent restarted.
                return _text(
                    409,
                    f"container {cid.value[:80]} takes no input: the agent restarted since "
                    "its launch and its launcher did not hand the input back",
                )
            container.input_attached = True
            try:
                await self._feed(request, reader, records, container)
            finally:
                container.input_attached = False
        except NestedError as e:
            return _text(e.status, e.message)
        except (ValueError, DecodeError) as e:
            return _text(400, f"Failed to decode the input stream: {e}")
        return _text(200)

    async def _feed(
        self,
        request: web.Request,
        reader: RecordIOReader,
        records: list[bytes],
        container: NestedContainer,
    ) -> None:
        """Applies input records until the client ends its stream or the container ends."""
        while True:
            reading = asyncio.ensure_future(_next_record(request, reader, records))
            ended = asyncio.ensure_future(container.exited.wait())
            await asyncio.wait((reading, ended), return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                reading.cancel()
                ended.cancel()
                return
            ended.cancel()
            record = reading.result()
            if record is None:
                return
            call = _input_call(record)
            payload = call.attach_container_input
            assert payload is not None
            if payload.type != "PROCESS_IO" or payload.process_io is None:
                raise NestedError(400, "Expecting records of type PROCESS_IO after the first")
            await self._apply(container, payload.process_io)

    async def _apply(self, container: NestedContainer, io: ProcessIO) -> None:
        kind, value = input_action(io)
        if kind == STDIN:
            await self.nested.write_input(container, value)
        elif kind == RESIZE:
            self.nested.resize(container, *value)


# What an input record asks for (`input_action`).
STDIN = "STDIN"
RESIZE = "RESIZE"
HEARTBEAT = "HEARTBEAT"


def input_action(io: ProcessIO) -> tuple[str, Any]:
    """What one ProcessIO record of an input stream asks for: (`STDIN`, the bytes; empty:
    end of input), (`RESIZE`, (rows, columns)) or (`HEARTBEAT`, None). NestedError (400)
    for a record that is not one of those, as Mesos' agent refuses it: data that is not
    STDIN or not base64, a CONTROL without its ``control``, a TTY_INFO without
    ``tty_info.window_size``, a size out of range (`window_size`)."""
    if io.type == "DATA":
        if io.data is None:
            raise NestedError(400, "A DATA record needs 'data'")
        if io.data.type != "STDIN":
            raise NestedError(400, f"Input data must be STDIN, not {io.data.type[:20]}")
        try:
            return STDIN, base64.b64decode(io.data.data, validate=True)
        except (binascii.Error, ValueError):
            raise NestedError(400, "Input data is not valid base64") from None
    if io.type == "CONTROL":
        control = io.control
        if control is None:
            raise NestedError(400, "A CONTROL record needs 'control'")
        if control.type == "HEARTBEAT":
            return HEARTBEAT, None
        if control.type != "TTY_INFO":
            raise NestedError(400, f"Unknown control record '{control.type[:20]}'")
        if control.tty_info is None:
            raise NestedError(400, "A TTY_INFO control record needs 'tty_info'")
        size = control.tty_info.window_size
        if size is None:
            raise NestedError(400, "A TTY_INFO control record needs 'tty_info.window_size'")
        return RESIZE, window_size({"rows": size.rows, "columns": size.columns})
    raise NestedError(400, f"Unknown ProcessIO record '{io.type[:20]}'")


def standalone_resources(raw: list[Any]) -> tuple[tuple[str, float], ...]:
    """The scalar totals of a standalone container's ``resources``; NestedError (400) for
    resources that are not valid (revocable ones included: butte has none), and for what
    Mesos' agent refuses a standalone container (reserved, persistent volumes) or butte does
    not enforce for one (anything but `STANDALONE_RESOURCES`)."""
    try:
        Resources.from_json(raw)
    except (ResourceError, TypeError, ValueError, OverflowError) as e:
        raise NestedError(400, f"Invalid resources: {str(e)[:200]}") from None
    for resource in raw:
        name = str(resource.get("name"))[:40]
        role = resource.get("role")
        if resource.get("reservations") or resource.get("reservation") or role not in (None, "*"):
            raise NestedError(400, "'launch_container.resources' must be unreserved")
        disk = resource.get("disk")
        if isinstance(disk, dict) and disk.get("persistence") is not None:
            raise NestedError(400, "'launch_container.resources' may not use persistent volumes")
        if name not in STANDALONE_RESOURCES or resource.get("type") != "SCALAR":
            raise NestedError(
                400,
                f"resource '{name}' is not supported for standalone containers: only the "
                f"scalars {', '.join(STANDALONE_RESOURCES)}",
            )
    return scalar_totals(raw)


def _input_call(record: bytes) -> OperatorCall:
    call = decode_call(record)
    if call.type != "ATTACH_CONTAINER_INPUT" or call.attach_container_input is None:
        raise NestedError(400, "Expecting ATTACH_CONTAINER_INPUT calls in the input stream")
    return call


async def _next_record(
    request: web.Request, reader: RecordIOReader, records: list[bytes]
) -> bytes | None:
    """The next record of the request body (None at its end); ValueError if malformed."""
    while not records:
        chunk = await request.content.readany()
        if not chunk:
            return None
        records.extend(reader.feed(chunk))
    return records.pop(0)


def _stream_response(request: web.Request) -> web.StreamResponse:
    chosen = stream_types(request)
    content_type, message_type = chosen if isinstance(chosen, tuple) else (RECORDIO, JSON)
    headers = {"Content-Type": content_type}
    if message_type is not None:
        headers["Message-Content-Type"] = message_type
    return web.StreamResponse(status=200, headers=headers)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()
