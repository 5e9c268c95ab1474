"""The database: one SQLAlchemy engine (SQLite or PostgreSQL) and what is kept in it.

The event and review history (:class:`EventStore`: batched writes, fast searches),
server-held conversations (:class:`ConversationStore`) and the grouped-commit helpers
other parts use for their own tables. Depends only on the settings.
"""

from __future__ import annotations

from service.store.conversations import Conversation, ConversationStore
from service.store.db import (
    GroupCommit,
    begin_write,
    create_engine,
    create_tables,
    dispose,
    metadata,
)
from service.store.events import EventStore
from service.store.schema import EventPatch, ReviewPatch

__all__ = [
    "Conversation",
    "ConversationStore",
    "EventPatch",
    "EventStore",
    "GroupCommit",
    "ReviewPatch",
    "begin_write",
    "create_engine",
    "create_tables",
    "dispose",
    "metadata",
]
