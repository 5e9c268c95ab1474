"""What a watch runner needs from outside: a clock, a vision model and its host (the engine).

Kept apart from the runner so the engine, the runner and the tests share one definition.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Protocol

from service.frames import Frame, FrameStore, Thumbnails
from service.frigate import LiveObject
from service.llm import TurnEnd
from service.settings import WatchSettings
from service.tools import Access
from service.watch.machine import MotionLike, WatchJob


class Clock(Protocol):
    """Wall time for the watch engine; tests inject a faster one."""

    def now(self) -> float:
        """Unix seconds."""

    def seconds_until(self, when: float) -> float:
        """Real seconds to wait until the clock reads ``when`` (0 if passed)."""


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()

    def seconds_until(self, when: float) -> float:
        """``when - now``, at least 0."""
        return max(0.0, when - time.time())


class VisionModel(Protocol):
    """What a watch needs of a provider (``service.llm.roles.Provider`` fits)."""

    async def complete(  # noqa: D102
        self,
        messages: list[dict[str, Any]],
        *,
        response_format: dict[str, Any] | None = None,
        enable_thinking: bool | None = None,
        deadline_s: float | None = None,
    ) -> TurnEnd: ...


class RunnerHost(Protocol):
    """What a runner asks of the engine."""

    clock: Clock
    policy: WatchSettings
    frames: FrameStore
    thumbnails: Thumbnails
    frigate_url: str | None
    frigate_timeout_s: float
    tz: dt.tzinfo

    def vision(self) -> VisionModel:
        """The provider for watch calls (raises LlmError when there is none)."""

    def live_objects(self, camera: str) -> list[LiveObject]:
        """What the detector tracks on ``camera`` now."""

    def motion(self, camera: str) -> MotionLike | None:
        """Frigate's motion state of ``camera`` (``None``: Frigate never said)."""

    def camera_name(self, camera: str) -> str:
        """A friendly name for the prompt."""

    async def sync(self, job: WatchJob) -> None:
        """Persist the job and publish its retained state."""

    async def alert(self, job: WatchJob, frame: Frame | None) -> None:
        """Publish the alert of a finished job (and the deciding frame)."""


class ClusterHooks(Protocol):
    """What the engine asks of a cluster (:class:`~service.watch.cluster.ClusterWatches`)."""

    async def adopt(self, engine: Any) -> int:
        """Take over and resume the watches of dead workers; how many."""

    async def cancel_elsewhere(
        self, engine: Any, access: Access, job: WatchJob
    ) -> tuple[WatchJob, bool]:
        """Cancel a watch another worker runs (or adopt it first when its owner is dead)."""
