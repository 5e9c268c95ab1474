"""The ``homeassistant`` section of the configuration."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.settings.names import NAME_RE, RESERVED_USERS


class HomeAssistantSettings(BaseModel):
    """``homeassistant:`` in the configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    discovery: bool = True
    """Announce lookout as a Home Assistant device; ``false`` removes the device again."""
    discovery_prefix: str = "homeassistant"
    """Home Assistant's discovery prefix (its MQTT integration options)."""
    status_topic: str | None = None
    """Home Assistant's birth topic; ``<discovery_prefix>/status`` when unset."""
    node_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """The device's object id and the prefix of every unique id; from
    ``mqtt.topic_prefix`` when unset, so two lookouts on one broker stay apart."""
    device_name: str = Field("lookout", min_length=1, max_length=64)
    user: str = "homeassistant"
    """The caller Home Assistant's questions and watch commands are made as."""
    continue_conversation_s: float = Field(300.0, ge=0)
    """A question within this many seconds of the last answer continues its conversation."""
    answer_timeout_s: float = Field(330.0, gt=0)
    """How long the bridge waits for an answer before it reports a timeout."""
    llm_check_interval_s: float = Field(300.0, ge=0)
    """How often the LLM sensor asks lookout's health; it also asks at start and when Home
    Assistant comes online (0: only then), and every answered or failed question updates it."""

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value) or value in RESERVED_USERS:
            raise ValueError("must be a caller name of A-Z, a-z, 0-9, '_' or '-' (not reserved)")
        return value

    @field_validator("discovery_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or any(c in value for c in "#+") or value.startswith("/"):
            raise ValueError("must be a plain topic level path without wildcards")
        return value.rstrip("/")
