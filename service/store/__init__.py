"""The database: one SQLAlchemy engine (SQLite or PostgreSQL) and what is kept in it.

The event and review history (:class:`EventStore`: batched writes, fast searches),
server-held conversations (:class:`ConversationStore`) and the grouped-commit helpers
other parts use for their own tables. Depends only on the settings.
"""

from __future__ import annotations

from service.store.cluster import (
    ROLES,
    ClusterError,
    Lease,
    WorkerInfo,
    live_worker_ids,
    orphaned,
)
from service.store.conversations import Conversation, ConversationStore
from service.store.db import (
    GroupCommit,
    begin_write,
    create_engine,
    create_tables,
    dispose,
    metadata,
)
from service.store.ends import NOT_REPORTED, WENT_AWAY, Ended, HistoryBounds
from service.store.events import EventStore
from service.store.schema import END_REASONS, EventPatch, EventRow, ReviewPatch, ReviewRow

__all__ = [
    "END_REASONS",
    "NOT_REPORTED",
    "ROLES",
    "WENT_AWAY",
    "ClusterError",
    "Conversation",
    "ConversationStore",
    "Ended",
    "EventPatch",
    "EventRow",
    "EventStore",
    "GroupCommit",
    "HistoryBounds",
    "Lease",
    "ReviewPatch",
    "ReviewRow",
    "WorkerInfo",
    "begin_write",
    "create_engine",
    "create_tables",
    "dispose",
    "live_worker_ids",
    "metadata",
    "orphaned",
]
