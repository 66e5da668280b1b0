"""The isolators of one agent, run together for the containerizer.

`Isolation` holds the isolators `--isolation` names (`butte.agent.containerizer.isolators`),
the cgroup layout they share and the user switching of ``--switch_user``. For each container
it creates the cgroups (every controller the isolators need, plus the v1 freezer), has each
isolator prepare, watch, report and clean up, and kills and removes the groups at the end:
`release` hands a finished container's groups to one worker thread
(`butte.agent.containerizer.releaser`), so the event loop never waits for the kernel's
teardown of a memory cgroup.
Recovery after an agent restart keeps the groups of the containers the agent recovered
(their limits stay in force: the kernel holds them) and destroys every other group under
``--cgroups_root`` as an orphan.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping

from butte.agent.containerizer import linux
from butte.agent.containerizer.cgroupfs import CgroupError, Cgroups
from butte.agent.containerizer.isolators import (
    ContainerSetup,
    Isolator,
    LaunchRefused,
    Limitation,
)
from butte.agent.containerizer.releaser import CgroupReleaser
from butte.agent.effects import LaunchContainer, UpdateContainer
from butte.agent.executor.command import NAMESPACES_ENV, USER_ENV

log = logging.getLogger("butte.agent")

LimitedCallback = Callable[[str, Limitation], None]


def _user_name(uid: int) -> str | None:
    """The name of user ``uid`` (None: it has none)."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


class Isolation:
    """See the module docstring."""

    def __init__(
        self,
        isolators: list[Isolator],
        cgroups: Cgroups | None,
        *,
        switch_user: bool = False,
    ) -> None:
        self.isolators = isolators
        self.cgroups = cgroups
        # Switching needs the rights to. Without them a task of another user cannot run as
        # asked, and fails as in Mesos (where su fails) rather than run as the agent's user.
        self.switch_user = switch_user and linux.is_root()
        self.refuses_other_users = switch_user and not self.switch_user
        self._own_name = _user_name(os.geteuid())
        self.controllers = list(
            dict.fromkeys(c for isolator in isolators for c in isolator.controllers)
        )
        self.names = [isolator.name for isolator in isolators]
        self.releaser = CgroupReleaser(self._remove_once) if cgroups is not None else None

    def prepare(self, spec: LaunchContainer) -> ContainerSetup:
        """Everything before the container's first process: user, cgroups, limits.
        Raises `LaunchRefused` (with the reason) when it cannot be isolated as asked."""
        setup = ContainerSetup()
        switching = self.switch_user and bool(spec.user)
        other = spec.user if spec.user != self._own_name else None  # own: nothing to switch
        if other and (self.switch_user or self.refuses_other_users):
            try:
                uid, gid, home = linux.resolve_user(other)
            except KeyError as e:
                raise LaunchRefused(e.args[0]) from None
            if uid != os.geteuid():
                if not self.switch_user:
                    raise LaunchRefused(
                        f"cannot run as user '{other}': --switch_user needs the agent to run "
                        "as root (or --switch_user=false to run every task as the agent's user)"
                    )
                setup.user = (other, uid, gid, home)
        cid = spec.container_id
        if self.cgroups is not None:
            try:
                setup.cgroup_procs = self.cgroups.create(self.controllers, cid)
            except (CgroupError, OSError) as e:
                self.release(cid)
                raise LaunchRefused(f"cannot create the container's cgroups: {e}") from None
        try:
            for isolator in self.isolators:
                isolator.prepare(spec, setup)
        except (LaunchRefused, OSError) as e:
            self.cleanup(cid)  # what the isolators before the failing one took
            self.release(cid)
            if isinstance(e, LaunchRefused):
                raise
            raise LaunchRefused(f"cannot set the container's limits: {e}") from None
        if spec.builtin:
            # The built-in executor applies these to each task it starts.
            if setup.task_namespaces:
                setup.env[NAMESPACES_ENV] = ",".join(setup.task_namespaces)
            if switching:
                # Task group members may name their own users: the executor switches each
                # task whose user is not the agent's.
                assert spec.user is not None
                setup.env[USER_ENV] = spec.user
        return setup

    def started(self, container_id: str, on_limit: LimitedCallback) -> None:
        for isolator in self.isolators:
            isolator.started(container_id, on_limit)

    def limitation(self, container_id: str) -> Limitation | None:
        """The first limit the container went over, read from the kernel now."""
        for isolator in self.isolators:
            found = isolator.limitation(container_id)
            if found is not None:
                return found
        return None

    def limitation_possible(self, container_id: str) -> bool:
        """Could the kernel still be about to count a limit the container went over (its
        end looks like the kernel's doing, but `limitation` found nothing yet)?"""
        return any(isolator.limitation_possible(container_id) for isolator in self.isolators)

    def update(self, change: UpdateContainer) -> None:
        """Tasks joined or left the running container: each isolator sets its limits again."""
        for isolator in self.isolators:
            isolator.update(change)

    def usage(self, container_id: str) -> dict[str, float]:
        """ResourceStatistics fields of the container (cgroup counters)."""
        statistics: dict[str, float] = {}
        for isolator in self.isolators:
            with contextlib.suppress(OSError):
                isolator.usage(container_id, statistics)
        return statistics

    def kill(self, container_id: str) -> None:
        """SIGKILLs every process of the container's cgroups at once (blocking)."""
        if self.cgroups is not None:
            self.cgroups.kill(self.controllers, container_id)

    def cleanup(self, container_id: str) -> None:
        """Stops watching a finished container (on the loop)."""
        for isolator in self.isolators:
            isolator.cleanup(container_id)

    def release(self, container_id: str) -> None:
        """Removes a finished container's cgroups in the background (killing what is left in
        them). Only after its end and any limit it went over have been read: its counters go
        with the groups."""
        if self.releaser is not None:
            self.releaser.release(container_id)

    def _remove_once(self, container_id: str) -> bool:
        assert self.cgroups is not None
        return self.cgroups.remove_once(self.controllers, container_id)

    def destroy_groups(self, container_id: str) -> None:
        """Kills what is left of the container and removes its cgroups, waiting for it
        (failed launches' and orphans' groups, in a worker thread)."""
        if self.cgroups is None:
            return
        try:
            if not self.cgroups.destroy(self.controllers, container_id):
                log.warning("cgroups of container %s could not be removed", container_id)
        except OSError as e:
            log.warning("cgroups of container %s: %s", container_id, e)

    def recover(
        self, recovered: Mapping[str, LaunchContainer], on_limit: LimitedCallback
    ) -> list[str]:
        """Re-watches the recovered containers (their launches as rebuilt from the agent's
        records); returns the ids of orphan groups (cgroups under the root that no recovered
        container owns), for `destroy_groups`."""
        for spec in recovered.values():
            if self.cgroups is not None:
                self.cgroups.thaw(spec.container_id)
            for isolator in self.isolators:
                isolator.recover_spec(spec, on_limit)
        if self.cgroups is None:
            return []
        return sorted(self.cgroups.containers() - set(recovered))

    def close(self) -> None:
        """Removes the --cgroups_root groups, and their parents up to the hierarchy, as far
        as nothing is left in them (agent shutdown; another agent's root stops it), after
        the groups released before are gone."""
        if self.cgroups is None:
            return
        if self.releaser is not None and not self.releaser.close():
            log.warning("cgroups of finished containers were still being removed at shutdown")
        depth = len([p for p in self.cgroups.root.split("/") if p])
        for controller in self.cgroups.mounts:
            directory = self.cgroups.root_dir(controller)
            for _ in range(depth):
                try:
                    os.rmdir(directory)
                except OSError:
                    break
                directory = os.path.dirname(directory)
