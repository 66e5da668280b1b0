"""Images in the mesos containerizer, the pure parts and the layer store on real files (the
real processes are in tests/integration/test_images.py): image names, ContainerInfo checks
(master and agent), manifests and configs, unsafe layer entries, whiteouts, the copy
backend's layering, the Docker command rules, users, volumes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from master_kit import Harness

from butte.agent.containerizer.image_runtime import (
    image_options,
    launch_argv,
    launch_plan,
    make_volume_sources,
    plan_volumes,
    resolve_user,
)
from butte.agent.containerizer.images import (
    Image,
    ImageConfig,
    ImageError,
    ImageStore,
    archive_name,
    member_path,
    parse_config,
    parse_manifest,
    unpack_layer,
    whiteout,
)
from butte.agent.containerizer.provisioner import apply_layer, overlay_problem
from butte.core import internal
from butte.core.container_info import container_problem, split_image_name
from butte.core.messages import ExecutorInfo, FrameworkInfo, TaskInfo
from butte.master.launch import InvalidTask, check_task
from butte.testing.require import require

SHA = "sha256:" + "a" * 64


def _root() -> None:
    require("whiteouts are device nodes: root only" if os.geteuid() else None, "root")


# -- names and ContainerInfo ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("busybox", ("busybox", "latest")),
        ("busybox:1.36", ("busybox", "1.36")),
        ("library/busybox:x", ("library/busybox", "x")),
        ("localhost:5000/team/app:v2", ("localhost:5000/team/app", "v2")),
    ],
)
def test_image_names_split_into_repository_and_tag(name: str, expected: tuple) -> None:
    assert split_image_name(name) == expected


@pytest.mark.parametrize(
    "name",
    ["", "../x", "/etc/passwd", "a/../b", "a//b", "a\x00b", "a:b:c/../d", "x@sha256:00", "UP", "."],
)
def test_image_names_with_path_tricks_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        split_image_name(name)


def test_archive_name_is_repo_colon_tag_dot_tar() -> None:
    assert archive_name("busybox") == "busybox:latest.tar"
    assert archive_name("team/app:2") == "team/app:2.tar"


def _container(name: str = "busybox", volumes: list | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "MESOS",
        "mesos": {"image": {"type": "DOCKER", "docker": {"name": name}}},
    }
    if volumes is not None:
        out["volumes"] = volumes
    return out


@pytest.mark.parametrize(
    ("container", "problem"),
    [
        (_container("../x"), "not a valid Docker image name"),
        (_container(volumes=[{"container_path": "/a/../b", "host_path": "/x"}]), "'..'"),
        (_container(volumes=[{"container_path": "/a", "host_path": "/x/../etc"}]), "'..'"),
        (_container(volumes=[{"container_path": "/a", "host_path": "/x", "mode": "RX"}]), "mode"),
        (_container(volumes=[{"container_path": "/a"}]), "needs a host_path or a source"),
        (
            _container(volumes=[{"container_path": "/a", "source": {"type": "SECRET"}}]),
            "source type 'SECRET' is not supported",
        ),
        (
            {"type": "MESOS", "mesos": {"image": {"type": "APPC", "appc": {"name": "x"}}}},
            "image type 'APPC' is not supported",
        ),
        (
            {"type": "MESOS", "volumes": [{"container_path": "/a", "host_path": "/b"}]},
            "without an image (mesos.image) a volume must be a path in the sandbox",
        ),
        (
            {
                "type": "MESOS",
                "volumes": [
                    {
                        "container_path": "a",
                        "source": {
                            "type": "SANDBOX_PATH",
                            "sandbox_path": {"type": "PARENT", "path": "b"},
                        },
                    }
                ],
            },
            "PARENT are for task group members only",
        ),
    ],
)
def test_bad_container_infos_are_refused(container: dict, problem: str) -> None:
    found = container_problem(container)
    assert found is not None and problem in found


def test_good_container_infos_and_other_types_pass() -> None:
    volumes = [
        {"container_path": "/data", "host_path": "/srv/data", "mode": "RO"},
        {
            "container_path": "rel",
            "source": {"type": "SANDBOX_PATH", "sandbox_path": {"path": "x"}},
        },
    ]
    assert container_problem(_container("team/app:2", volumes)) is None
    assert container_problem({"type": "MESOS"}) is None
    # Without an image: relative paths in the sandbox, a member's of its parent's too.
    parent = {"type": "SANDBOX_PATH", "sandbox_path": {"type": "PARENT", "path": "v"}}
    member = {"type": "MESOS", "volumes": [{"container_path": "v", "source": parent}]}
    assert container_problem(member, in_group=True) is None
    assert container_problem({"type": "MESOS", "volumes": volumes[1:]}) is None
    assert container_problem({"type": "DOCKER", "docker": {"image": "../x"}}) is None  # not ours
    assert container_problem(None) is None


def test_the_master_answers_a_bad_image_with_task_error() -> None:
    task = msgspec.convert(
        {
            "name": "t",
            "task_id": {"value": "t"},
            "agent_id": {"value": "a"},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}}],
            "command": {"value": "true"},
            "container": _container("/etc/shadow"),
        },
        TaskInfo,
    )
    with pytest.raises(InvalidTask, match="not a valid Docker image name"):
        check_task(task, FrameworkInfo(user="u", name="f"), "a", set(), {})
    custom = msgspec.structs.replace(
        task,
        command=None,
        container=_container("busybox"),
        executor=msgspec.convert(
            {"executor_id": {"value": "e"}, "command": {"value": "x"}}, ExecutorInfo
        ),
    )
    with pytest.raises(InvalidTask, match="Images run only for command tasks"):
        check_task(custom, FrameworkInfo(user="u", name="f"), "a", set(), {})


# -- manifests, configs, layer entries -------------------------------------------------------


def test_config_gives_entrypoint_cmd_env_workdir_user_and_digests() -> None:
    raw = {
        "config": {
            "Entrypoint": ["/e"],
            "Cmd": ["c"],
            "Env": ["A=1", "B=x=y"],
            "WorkingDir": "/w",
            "User": "nobody",
        },
        "rootfs": {"type": "layers", "diff_ids": [SHA]},
    }
    config = parse_config(json.dumps(raw).encode())
    assert config == ImageConfig(
        ("/e",), ("c",), (("A", "1"), ("B", "x=y")), "/w", "nobody", (SHA,)
    )
    for bad in (b"[]", b"{", json.dumps({"rootfs": {"diff_ids": ["md5:00"]}}).encode()):
        with pytest.raises(ImageError):
            parse_config(bad)
    with pytest.raises(ImageError, match="bad Env entry"):
        parse_config(json.dumps({"config": {"Env": ["NOEQUALS"]}}).encode())


def test_manifest_picks_the_tag_and_refuses_members_outside_the_archive() -> None:
    manifest = [
        {"Config": "a.json", "RepoTags": ["other:1"], "Layers": ["a/layer.tar"]},
        {"Config": "b.json", "RepoTags": ["app:2"], "Layers": ["b/layer.tar", "c/layer.tar"]},
    ]
    assert parse_manifest(json.dumps(manifest).encode(), "app:2") == (
        "b.json",
        ("b/layer.tar", "c/layer.tar"),
    )
    evil = [{"Config": "../../etc/passwd", "Layers": ["l.tar"]}]
    with pytest.raises(ImageError, match="leaves the layer"):
        parse_manifest(json.dumps(evil).encode(), "app")
    with pytest.raises(ImageError):
        parse_manifest(b"{}", "app")


def test_member_paths_and_whiteouts() -> None:
    assert member_path("./etc/passwd") == "etc/passwd"
    assert member_path("./") == ""
    for bad in ("/etc/passwd", "a/../../b", "x\x00y"):
        with pytest.raises(ImageError):
            member_path(bad)
    assert whiteout("etc/.wh.motd") == ("whiteout", "etc/motd")
    assert whiteout(".wh.top") == ("whiteout", "top")
    assert whiteout("var/.wh..wh..opq") == ("opaque", "var")
    assert whiteout("etc/motd") is None


def _tar(*entries: tuple[str, str, Any]) -> bytes:
    """A layer tar: (kind, name, data) with kind file/dir/symlink/hardlink/chr."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
            }[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = data
            tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ((("file", "/etc/passwd", b"x"),), "absolute"),
        ((("file", "../../escape", b"x"),), "leaves the layer"),
        ((("symlink", "etc", "/etc"), ("file", "etc/passwd", b"x")), "not a directory"),
        ((("chr", "dev/null", None),), "device"),
        ((("hardlink", "x", "../../etc/shadow"),), "leaves the layer"),
    ],
)
def test_unsafe_layer_entries_are_refused(tmp_path: Path, entries: tuple, problem: str) -> None:
    with pytest.raises(ImageError, match=problem):
        unpack_layer(io.BytesIO(_tar(*entries)), str(tmp_path / "root"))
    assert not (tmp_path / "etc" / "passwd").exists()


def test_unpacking_returns_the_digest_and_keeps_links(tmp_path: Path) -> None:
    blob = _tar(("dir", "bin", None), ("file", "bin/a", b"AAA"), ("hardlink", "bin/b", "bin/a"))
    digest = unpack_layer(io.BytesIO(blob), str(tmp_path / "root"))
    assert digest == hashlib.sha256(blob).hexdigest()
    assert (tmp_path / "root/bin/b").read_bytes() == b"AAA"
    assert os.stat(tmp_path / "root/bin/a").st_ino == os.stat(tmp_path / "root/bin/b").st_ino


def test_whiteouts_and_opaque_dirs_apply_like_overlayfs(tmp_path: Path) -> None:
    _root()
    lower = _tar(
        ("dir", "etc", None),
        ("file", "etc/motd", b"m"),
        ("file", "etc/keep", b"k"),
        ("dir", "var", None),
        ("file", "var/old", b"o"),
        ("symlink", "lib", "usr/lib"),
    )
    upper = _tar(
        ("file", "etc/.wh.motd", b""),
        ("dir", "var", None),
        ("file", "var/.wh..wh..opq", b""),
        ("file", "var/new", b"n"),
        ("dir", "lib", None),
        ("file", "lib/x", b"x"),
    )
    unpack_layer(io.BytesIO(lower), str(tmp_path / "l1"))
    unpack_layer(io.BytesIO(upper), str(tmp_path / "l2"))
    st = os.lstat(tmp_path / "l2/etc/motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0  # overlayfs' whiteout
    assert os.getxattr(tmp_path / "l2/var", "trusted.overlay.opaque") == b"y"
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    apply_layer(str(tmp_path / "l1"), str(rootfs))
    apply_layer(str(tmp_path / "l2"), str(rootfs))
    assert not (rootfs / "etc/motd").exists()
    assert (rootfs / "etc/keep").read_bytes() == b"k"
    assert sorted(os.listdir(rootfs / "var")) == ["new"]
    assert not (rootfs / "lib").is_symlink() and (rootfs / "lib/x").read_bytes() == b"x"


# -- the store ---------------------------------------------------------------------------


def _archive(path: Path, layer: bytes, digest: str | None = None) -> Path:
    diff_id = "sha256:" + (digest or hashlib.sha256(layer).hexdigest())
    config = json.dumps({"config": {"Cmd": ["x"]}, "rootfs": {"diff_ids": [diff_id]}}).encode()
    manifest = [{"Config": "c.json", "RepoTags": ["app:latest"], "Layers": ["l/layer.tar"]}]
    with tarfile.open(path, "w") as tar:
        for name, data in (
            ("c.json", config),
            ("l/layer.tar", layer),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_store_refuses_a_layer_whose_digest_does_not_match_and_keeps_nothing(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    layer = _tar(("file", "hello", b"hi"))
    _archive(registry / "app:latest.tar", layer, digest="b" * 64)
    store = ImageStore(str(registry), str(tmp_path / "store"))
    with pytest.raises(ImageError, match="is corrupt"):
        store.get("app")
    assert not os.listdir(store.layers_dir) and not os.listdir(store.staging_dir)
    with pytest.raises(ImageError, match="Failed to find image 'nope'"):
        store.get("nope")
    # The message names the file looked for, with the name's registry part as a directory.
    with pytest.raises(ImageError) as missing:
        store.get("localhost:20099/busybox")
    assert f"no such archive {registry}/localhost:20099/busybox:latest.tar" in str(missing.value)
    # Replaced by a good archive: the store serves it (nothing cached from the bad one).
    _archive(registry / "app:latest.tar", layer)
    image = store.get("app")
    assert Path(image.layers[0], "hello").read_bytes() == b"hi"
    assert store.get("app") is image and store.unpacked == 1


# -- what runs, as whom, with which mounts --------------------------------------------------------


CONFIG = ImageConfig(entrypoint=("/entry", "-x"), cmd=("default",))


@pytest.mark.parametrize(
    ("config", "command", "expected"),
    [
        (CONFIG, {"shell": True, "value": "echo hi"}, ("/bin/sh", ["/bin/sh", "-c", "echo hi"])),
        (CONFIG, {"shell": False}, ("/entry", ["/entry", "-x", "default"])),
        (CONFIG, {"shell": False, "arguments": ["a", "b"]}, ("/entry", ["/entry", "-x", "a", "b"])),
        (ImageConfig(cmd=("ls", "-l")), {"shell": False}, ("ls", ["ls", "-l"])),
        # No Entrypoint: Cmd[0] runs with the task's arguments (Mesos' table, not Docker's).
        (
            ImageConfig(cmd=("/bin/sh", "-c", "default")),
            {"shell": False, "arguments": ["-c", "echo hi"]},
            ("/bin/sh", ["/bin/sh", "-c", "echo hi"]),
        ),
        (ImageConfig(cmd=("ls",)), {"shell": False, "arguments": ["-l"]}, ("ls", ["ls", "-l"])),
        (ImageConfig(entrypoint=("/e",)), {"shell": False}, ("/e", ["/e"])),
        (ImageConfig(), {"shell": False, "value": "/p", "arguments": ["p"]}, ("/p", ["p"])),
        (CONFIG, {"shell": False, "value": "/p", "arguments": ["p", "1"]}, ("/p", ["p", "1"])),
        (CONFIG, {"shell": False, "value": "/p"}, ("/p", ["/p"])),
    ],
)
def test_commands_follow_docker_and_mesos_rules(config, command, expected) -> None:
    assert launch_argv(config, command) == expected


def test_an_image_without_a_command_and_a_task_without_one_is_an_error() -> None:
    with pytest.raises(ImageError, match="no Entrypoint or Cmd"):
        launch_argv(ImageConfig(), {"shell": False})


PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nextra:x:2000:app\n"


def test_users_are_resolved_in_the_image() -> None:
    user = resolve_user("app", PASSWD, GROUP)
    assert (user.uid, user.gid, user.groups, user.home) == (1000, 1000, (1000, 2000), "/home/app")
    assert resolve_user("app:extra", PASSWD, GROUP).gid == 2000
    assert resolve_user("4242:7", PASSWD, GROUP).uid == 4242
    with pytest.raises(ImageError, match="does not exist in the image"):
        resolve_user("nobody", PASSWD, GROUP)
    with pytest.raises(ImageError, match="group 'nogroup'"):
        resolve_user("app:nogroup", PASSWD, GROUP)


def test_the_images_user_is_not_used_the_tasks_is(tmp_path: Path) -> None:
    """As Mesos' docker runtime isolator: the image's User only gets a warning; the task
    runs as the user the agent gives (its CommandInfo's, else its framework's), else root."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    image = Image("app", ImageConfig(cmd=("true",), user="app"), ())

    def user_of(default_user: str | None) -> Any:
        plan = launch_plan(
            image=image,
            rootfs=str(tmp_path),
            sandbox="/sb",
            command={"shell": False},
            executor_env={},
            task_env={},
            mounts=[],
            default_user=default_user,
        )
        return plan["user"], plan["env"]["HOME"]

    assert user_of("root") == (None, "/root")
    assert user_of(None) == (None, "/root")
    assert user_of("app") == (["app", 1000, 1000, [1000, 2000], "/home/app"], "/home/app")


def test_missing_sandbox_volume_directories_are_made_for_the_sandbox_owner(
    tmp_path: Path,
) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    if os.geteuid() == 0:
        os.chown(sandbox, 4242, 4343)  # not the creator's: the owner is copied, not assumed
    owner = sandbox.stat()
    volumes = [
        {"container_path": "relc", "host_path": "rel", "mode": "RW"},
        {
            "container_path": "/sp",
            "mode": "RW",
            "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "SELF", "path": "a/b"}},
        },
    ]
    mounts = plan_volumes(volumes, str(sandbox), [])
    make_volume_sources(mounts, str(sandbox))
    for made in ("rel", "a", "a/b"):
        st = (sandbox / made).stat()
        assert stat.S_ISDIR(st.st_mode) and (st.st_uid, st.st_gid) == (owner.st_uid, owner.st_gid)
    # One that exists is left as it is.
    (sandbox / "rel").chmod(0o700)
    make_volume_sources(mounts, str(sandbox))
    assert stat.S_IMODE((sandbox / "rel").stat().st_mode) == 0o700
    # A host path is never made: a missing one fails the launch here, in the agent.
    host = [{"container_path": "/h", "host_path": str(tmp_path / "gone"), "mode": "RO"}]
    with pytest.raises(ImageError, match="gone does not exist"):
        make_volume_sources(plan_volumes(host, str(sandbox), [str(tmp_path)]), str(sandbox))
    assert not (tmp_path / "gone").exists()
    # Nor through a symlink in the sandbox that leads out of it.
    (sandbox / "out").symlink_to(tmp_path)
    through = [{"container_path": "/o", "host_path": "out/escaped", "mode": "RW"}]
    with pytest.raises(ImageError, match="out of the sandbox"):
        make_volume_sources(plan_volumes(through, str(sandbox), []), str(sandbox))
    assert not (tmp_path / "escaped").exists()


def test_volumes_map_to_bind_mounts_and_host_paths_must_be_allowed() -> None:
    volumes = [
        {"container_path": "/data", "host_path": "/srv/data/x", "mode": "RO"},
        {"container_path": "rel", "host_path": "cache"},
        {"container_path": "/s", "source": {"type": "SANDBOX_PATH", "sandbox_path": {"path": "d"}}},
    ]
    mounts = plan_volumes(volumes, "/sb", ["/srv/data"])
    assert [(m.source, m.target, m.readonly) for m in mounts] == [
        ("/srv/data/x", "/data", True),
        ("/sb/cache", "/mnt/mesos/sandbox/rel", False),
        ("/sb/d", "/s", False),
    ]
    with pytest.raises(ImageError, match="not allowed"):
        plan_volumes([{"container_path": "/e", "host_path": "/srv/database"}], "/sb", ["/srv/data"])
    with pytest.raises(ImageError, match="not allowed"):
        plan_volumes([{"container_path": "/e", "host_path": "/etc"}], "/sb", [])


def test_the_master_takes_task_group_members_in_images_not_their_executor() -> None:
    h = Harness()
    h.register_agent()
    fid, stream = h.subscribe()
    h.allocate()
    (offer, *_) = h.offers(stream)

    def group(name: str, executor_container: dict | None) -> dict:
        member = {
            "name": name,
            "task_id": {"value": name},
            "agent_id": offer["agent_id"],
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
            "command": {"value": "true"},
            "container": _container("busybox"),
        }
        executor = {
            "executor_id": {"value": f"e-{name}"},
            "type": "DEFAULT",
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
        }
        if executor_container is not None:
            executor["container"] = executor_container
        return {
            "type": "LAUNCH_GROUP",
            "launch_group": {"executor": executor, "task_group": {"tasks": [member]}},
        }

    operations = [group("in-image", None), group("bad", _container("busybox"))]
    body = {"type": "ACCEPT", "accept": {"offer_ids": [offer["id"]], "operations": operations}}
    h.call(fid, stream, body)
    (status,) = h.updates(stream)  # the member in an image goes to the agent
    assert status["task_id"]["value"] == "bad" and status["state"] == "TASK_ERROR"
    assert "A task group's executor cannot run in an image" in status["message"]
    (run,) = h.agent_messages("c1", internal.RunTaskGroup)
    assert run.task_group.tasks[0].container["mesos"]["image"]["docker"]["name"] == "busybox"


def test_image_flags_are_checked_and_the_backend_defaults_to_what_works(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    work = str(tmp_path / "work")
    assert image_options(None, None, None, (), work) is None
    with pytest.raises(ValueError, match="need --image_providers"):
        image_options(None, str(registry), None, (), work)
    with pytest.raises(ValueError, match="needs --docker_registry"):
        image_options(("docker",), None, None, (), work)
    with pytest.raises(ValueError, match="not a local directory"):
        image_options(("docker",), "http://registry:5000", None, (), work)
    options = image_options(("docker",), str(registry), "copy", ("/srv",), work)
    assert options is not None and options.backend == "copy"
    chosen = image_options(("docker",), str(registry), None, (), work)
    assert chosen is not None
    assert chosen.backend == ("copy" if overlay_problem(work) else "overlay")
    assert not [p for p in os.listdir(work) if p.startswith(".overlay-probe")]
