"""The ``watch`` section of the configuration (kept apart so ``settings`` imports little)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WatchSettings(BaseModel):
    """The ``watch`` section of the configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_active: int = Field(16, ge=1, le=1000)
    """Running watches across all users; one more is refused with `overloaded`."""
    max_active_per_user: int = Field(4, ge=1, le=1000)
    """Running watches per user; one more is refused with `rate_limited`."""
    min_interval_s: float = Field(5.0, ge=0, le=300)
    """Least time between the starts of two model calls of one watch, wake-ups included."""
    unzoned_wake_cooldown_s: float = Field(10.0, ge=0, le=300)
    """A watch without zones is woken early at most this long after its last answer."""
    max_frame_age_s: float = Field(30.0, gt=0)
    """An older frame is not shown to the model; the watch waits for (or fetches) a newer one."""
    max_history: int = Field(10, ge=0, le=20)
    """Earlier frame/answer pairs sent with each call, so the model sees what changed."""
    vision_deadline_s: float = Field(60.0, gt=0)
    """Bound on one model call (the job's remaining time bounds it too)."""
    error_backoff_s: float = Field(5.0, gt=0)
    """First wait after a failed call; doubles with each failure in a row."""
    error_backoff_max_s: float = Field(120.0, gt=0)
    """Longest wait between retries after failed calls."""
    history_keep_s: float = Field(7 * 86_400.0, ge=0)
    """Finished watches stay listed (and their retained topics stay) this long."""
    snapshot_retain: bool = True
    """Retain the deciding frame on ``.../snapshot`` until the watch leaves history."""
    max_unchanged_s: float = Field(1800.0, ge=0, le=86_400)
    """Longest a watch goes without a model call while its scene looks unchanged; ``0``
    turns the change gate off (every check the model asks for is made)."""
    change_threshold: float = Field(0.12, gt=0, le=1)
    """How different a cell of the grey thumbnail must be (illumination-normalised mean
    difference) for the scene to count as changed; lower is more sensitive."""
    confirm_below: float = Field(0.6, ge=0, le=1)
    """A ``met`` verdict whose confidence is below this is confirmed on the next fresh
    frame before the alert goes out; ``0`` alerts at once on every ``met``."""
