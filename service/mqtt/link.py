"""The bus's plain types: an inbound message, the link's state, its errors.

Kept apart from :mod:`service.mqtt.bus` (the only importer of aiomqtt) so the rest of
lookout and its tests use them without the client library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class BusAuthError(Exception):
    """The broker refused our credentials; retrying would not help."""


class BusUnavailableError(Exception):
    """The broker did not come back within the caller's patience."""


@dataclass(frozen=True, slots=True, eq=False)
class Message:
    """One inbound message, free of aiomqtt types."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    response_topic: str | None = None
    correlation_data: bytes | None = None
    _ack: Callable[[], None] | None = field(default=None, repr=False)

    def ack(self) -> None:
        """Acknowledge a QoS 1 message to the broker (idempotent, safe after a reconnect)."""
        if self._ack is not None:
            self._ack()


@dataclass(slots=True)
class BusState:
    """What `health` reports about the broker link."""

    connected: bool = False
    connects: int = 0
    last_connected_at: float | None = None
    last_error: str | None = None
    dropped: int = 0


def raise_if_cancel_was_swallowed() -> None:
    """Honour a cancel that Python 3.11's ``asyncio.wait_for`` lost.

    aiomqtt waits for acks with ``wait_for``; on 3.11 a cancel that lands just as the
    ack arrives is swallowed (fixed in 3.12), and a stop requested during connect would
    go unnoticed until the next cancel. The request is still counted on the task.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def reason_code(exc: Exception) -> int:
    """The MQTT reason code of a connection error (-1 when it has none)."""
    rc: Any = getattr(exc, "rc", None)
    value = getattr(rc, "value", rc)
    return int(value) if isinstance(value, int) else -1
