"""``butte vm``: the VM scheduler daemon (``serve``) and its client commands (docs/vm.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_SERVER = "127.0.0.1:8190"


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``butte vm serve`` and the client subcommands."""
    commands = parser.add_subparsers(dest="vm_command", metavar="VM_COMMAND", required=True)
    serve = commands.add_parser("serve", help="run the VM scheduler (framework + REST API)")
    serve.add_argument("--master", required=True, help="master to subscribe to, HOST:PORT")
    serve.add_argument("--http_port", type=int, default=8190, help="port of the REST API")
    serve.add_argument("--http_ip", default="127.0.0.1", help="address of the REST API")
    serve.add_argument(
        "--work_dir", required=True, help="directory for the VM records and framework id"
    )
    serve.add_argument("--name", default="butte-vm", help="framework name")
    serve.add_argument(
        "--python", default=sys.executable,
        help="Python interpreter with butte that agents run the VM executor with "
        "(default: this one, %(default)s)",
    )  # fmt: skip
    serve.set_defaults(vm_handler=_serve)

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--server",
            default=os.environ.get("BUTTE_VM_SERVER", DEFAULT_SERVER),
            help="HOST:PORT of `butte vm serve` (env BUTTE_VM_SERVER; default %(default)s)",
        )
        return sub

    create = client("create", "define a VM and boot it")
    create.add_argument("name")
    create.add_argument("--cpus", type=int, default=1, help="vCPUs")
    create.add_argument("--mem", type=int, default=256, help="memory in MB")
    create.add_argument("--kernel", required=True, help="kernel: absolute path or URI")
    create.add_argument("--initrd", help="initramfs: absolute path or URI")
    create.add_argument("--disk", help="raw (or .qcow2) disk image: absolute path or URI")
    create.add_argument("--cmdline", default="", help="kernel command line (after console=)")
    create.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    create.set_defaults(vm_handler=_create)
    client("list", "list the VMs").set_defaults(vm_handler=_list)
    for name, help_text in (
        ("show", "show one VM"),
        ("start", "boot a stopped VM again"),
        ("stop", "stop a VM (ACPI power button, then off)"),
        ("restart", "reset a running VM in place (its task keeps running)"),
        ("delete", "stop and forget a VM"),
    ):
        sub = client(name, help_text)
        sub.add_argument("name")
        if name == "stop":
            sub.add_argument(
                "--grace", type=float, default=None,
                help="seconds between the ACPI power button and switching it off (default 10)",
            )  # fmt: skip
        sub.set_defaults(vm_handler=_simple)
    console = client("console", "print the VM's serial console")
    console.add_argument("name")
    console.add_argument("--follow", "-f", action="store_true", help="keep printing")
    console.set_defaults(vm_handler=_console)


def run(args: argparse.Namespace) -> int:
    try:
        return int(args.vm_handler(args) or 0)
    except VmClientError as e:
        print(f"butte vm: error: {e}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    from butte.frameworks.vm.server import VmServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    executor = (args.python, "-m", "butte.frameworks.vm.executor")
    server = VmServer(
        args.master, args.work_dir, args.http_ip, args.http_port, executor, name=args.name
    )
    try:
        return asyncio.run(server.run())
    except KeyboardInterrupt:
        return 130


class VmClientError(Exception):
    """The server refused or could not be reached."""


def request(server: str, method: str, path: str, body: Any = None) -> Any:
    """One call to the REST API; the JSON answer (VmClientError for a 4xx/5xx)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{server}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error", "")
        except ValueError:
            message = ""
        raise VmClientError(f"HTTP {e.code}: {message or e.reason}") from None
    except OSError as e:
        raise VmClientError(f"cannot reach {server}: {e}") from None


def _vm_path(name: str) -> str:
    return "/api/v1/vms/" + urllib.parse.quote(name, safe="")


def _print_vm(vm: dict[str, Any]) -> None:
    print(json.dumps(vm, indent=2, sort_keys=True))


def _create(args: argparse.Namespace) -> int:
    body = {
        "name": args.name,
        "cpus": args.cpus,
        "mem": args.mem,
        "kernel": _absolute(args.kernel),
        "cmdline": args.cmdline,
        "accel": args.accel,
    }
    for key in ("initrd", "disk"):
        if getattr(args, key):
            body[key] = _absolute(getattr(args, key))
    _print_vm(request(args.server, "POST", "/api/v1/vms", body))
    return 0


def _absolute(value: str) -> str:
    """Local paths are made absolute (the agent copies them); URIs stay."""
    return value if "://" in value else os.path.abspath(value)


def _list(args: argparse.Namespace) -> int:
    vms = request(args.server, "GET", "/api/v1/vms")["vms"]
    print(f"{'NAME':<20} {'STATE':<10} {'CPUS':>4} {'MEM':>6}  {'HOST':<16} MESSAGE")
    for vm in vms:
        spec = vm["spec"]
        print(
            f"{vm['name']:<20} {vm['state']:<10} {spec['cpus']:>4} {spec['mem']:>6}  "
            f"{vm.get('hostname') or '-':<16} {vm.get('message') or ''}"
        )
    return 0


def _simple(args: argparse.Namespace) -> int:
    path = _vm_path(args.name)
    if args.vm_command == "show":
        vm = request(args.server, "GET", path)
    elif args.vm_command == "delete":
        vm = request(args.server, "DELETE", path)
    else:
        body = {}
        if getattr(args, "grace", None) is not None:
            body["grace_seconds"] = args.grace
        vm = request(args.server, "POST", f"{path}/{args.vm_command}", body)
    _print_vm(vm)
    return 0


def _console(args: argparse.Namespace) -> int:
    offset = 0
    while True:
        answer = request(args.server, "GET", f"{_vm_path(args.name)}/console?offset={offset}")
        data = answer.get("data", "")
        if data:
            sys.stdout.write(data)
            sys.stdout.flush()
            offset += len(data.encode("utf-8", "surrogateescape"))
        if not args.follow:
            return 0
        if not data:
            time.sleep(0.5)
