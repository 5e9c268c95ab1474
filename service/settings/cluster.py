"""The ``cluster`` section: several lookout workers behind one broker and one database.

Off by default: a single worker keeps today's fixed client id, its own persistent
session and SQLite. With ``enabled`` every worker takes requests from a shared
subscription and keeps its ownership records (requests, watches, roles) in PostgreSQL.
"""

from __future__ import annotations

import re
import secrets
import socket

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.settings.names import NAME_RE

WORKER_NAME_MAX = 40
"""Worker names become part of the MQTT client id and of a topic level."""


class ClusterSettings(BaseModel):
    """The ``cluster`` section of the configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    """Run as one of several workers (needs ``store.url`` on PostgreSQL)."""
    worker_name: str | None = None
    """This worker's name (client id, logs, health, ownership); default: the host name
    plus a short random suffix, new at every start."""
    share_group: str = "lookout"
    """The MQTT shared-subscription group the workers' request filters join."""
    takeover_s: float = Field(15.0, ge=3.0, le=600.0)
    """A dead worker's watches, requests and roles are taken over within this long."""

    @field_validator("worker_name", "share_group")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (not NAME_RE.fullmatch(value) or len(value) > WORKER_NAME_MAX):
            raise ValueError(f"must be 1-{WORKER_NAME_MAX} characters of A-Z, a-z, 0-9, '_' or '-'")
        return value


def resolve_worker_name(settings: ClusterSettings) -> str:
    """The configured worker name, else ``<host>-<4 hex>`` (a fresh one at every start).

    A fresh suffix per start keeps a restarted worker from being taken for the one that
    died (whose requests, watches and broker session the others take over).
    """
    if settings.worker_name:
        return settings.worker_name
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0]) or "worker"
    return f"{host[: WORKER_NAME_MAX - 5]}-{secrets.token_hex(2)}"
