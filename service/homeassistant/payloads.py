"""What the Home Assistant bridge and the command line read from lookout's MQTT API.

Replies, watch job states and watch alerts, validated at the edge. They are lenient on
purpose (extra fields are kept or ignored, most fields optional): they are lookout's own
output read back by a client, and a newer lookout may add fields.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

FINISHED_WATCH_STATUSES = frozenset({"success", "failed", "cancelled"})
"""The watch engine's terminal statuses; every other status is a running watch."""


class Reply(BaseModel):
    """One reply of lookout's envelope; the kind's own fields ride along as extras."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    type: str
    seq: int = 0

    @property
    def terminal(self) -> bool:
        """Whether this is the request's last reply."""
        return self.type in ("done", "error")

    def body(self) -> dict[str, Any]:
        """Every field, the kind's own included."""
        return self.model_dump()


class WatchJobState(BaseModel):
    """A watch as its retained state topic and the ``list``/``get`` replies describe it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    job_id: str
    user: str | None = None
    camera: str | None = None
    condition: str | None = None
    status: str = "pending"
    created_at: float | None = None
    deadline: float | None = None

    @property
    def active(self) -> bool:
        """Whether the watch is still running."""
        return self.status not in FINISHED_WATCH_STATUSES

    def summary(self) -> dict[str, Any]:
        """The fields shown in Home Assistant's list of active watches."""
        return self.model_dump(exclude_none=True)


class WatchAlert(BaseModel):
    """A watch's alert: how it ended, in words; unknown fields are kept for automations."""

    model_config = ConfigDict(extra="allow", frozen=True)

    job_id: str | None = None
    camera: str | None = None
    condition: str | None = None
    message: str | None = None
    reasoning: str | None = None
    status: str | None = None
    end_reason: str | None = None


def parse_reply(payload: bytes) -> Reply | None:
    """A reply, or ``None`` for anything that is not one."""
    try:
        return Reply.model_validate_json(payload)
    except ValidationError:
        return None


def parse_jobs(reply: dict[str, Any]) -> list[WatchJobState]:
    """The jobs of a ``watch`` ``list`` reply; entries that are not jobs are skipped."""
    jobs = reply.get("jobs")
    out: list[WatchJobState] = []
    for job in jobs if isinstance(jobs, list) else []:
        try:
            out.append(WatchJobState.model_validate(job))
        except ValidationError:
            continue
    return out
