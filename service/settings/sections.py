"""The sections of the configuration, each a pydantic model that forbids unknown keys.

Every model forbids unknown keys, so a typo is an error with its key path instead of a
silently ignored setting.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from service.settings.cluster import ClusterSettings
from service.settings.homeassistant import HomeAssistantSettings
from service.settings.names import NAME_PATTERN
from service.settings.watch import WatchSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Section):
    """How lookout reaches the broker."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    tls_ca_certs: str | None = None
    tls_insecure: bool = False
    client_id: str = Field("lookout", min_length=1, max_length=128)
    protocol: Literal[5, 311] = 5
    topic_prefix: str = "lookout"
    session_expiry_s: int = Field(3600, ge=0)
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(5.0, gt=0)
    """Cap on the reconnect delay: a returning broker is found within this many seconds."""
    inbound_queue: int = Field(10_000, ge=10)
    """Messages waiting for dispatch; beyond it requests get `overloaded`, frames are dropped."""

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: Any) -> Any:
        aliases = {"5": 5, "5.0": 5, "v5": 5, "3.1.1": 311, "311": 311, "4": 311, 4: 311}
        return aliases.get(value, value) if isinstance(value, str | int) else value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _topic_prefix(value)


def _topic_prefix(value: str) -> str:
    value = value.rstrip("/")
    if not value or any(c in value for c in "#+$\x00") or value.startswith("/"):
        raise ValueError("must be a plain topic level path without wildcards")
    return value


class CameraSettings(_Section):
    """Optional names for a camera that Frigate or the broker already tells lookout about."""

    friendly_name: str | None = None
    zones: dict[str, str] = Field(default_factory=dict)
    """Zone id -> friendly name."""


class FrigateSettings(_Section):
    """Where Frigate publishes, and optionally where its HTTP API answers."""

    topic_prefix: str = "frigate"
    url: str | None = None
    api_timeout_s: float = Field(5.0, gt=0)
    cameras: dict[str, CameraSettings] = Field(default_factory=dict)
    object_ttl_s: float = Field(600.0, gt=0)
    """A live object with no update for this long is dropped."""
    confirm_timeout_s: float = Field(3.0, gt=0, le=30)
    """How long `set_camera_state` waits for Frigate's state topic to confirm a change."""
    camera_monitoring: bool = True
    """Mirror watch alerts onto `frigate/camera_monitoring` in Frigate's shape."""
    import_history: bool = True
    """With ``url`` set: import Frigate's events and reviews from its API at start (back
    to ``store.retention_days``) and after every reconnect (the gap)."""
    import_retry_s: float = Field(30.0, gt=0)
    """First wait before retrying a failed import (it doubles, up to 15 minutes)."""
    request_activity: bool = True
    """Publish ``frigate/onConnect`` when Frigate or lookout (re)connects, so Frigate sends
    the true runtime state of every camera (``frigate/camera_activity``)."""
    latest_cache_s: float = Field(2.0, ge=0, le=60)
    """A ``latest.jpg`` fetched from Frigate is reused for this long."""

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _topic_prefix(value)


Role = Literal["chat", "vision"]


class ProviderSettings(_Section):
    """One OpenAI-compatible endpoint."""

    kind: Literal["openai", "azure"] = "openai"
    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str
    roles: list[Role] = Field(default_factory=lambda: list[Role](["chat", "vision"]))
    timeout_s: float = Field(120.0, gt=0)
    """Longest silence allowed between two chunks of a streamed answer."""
    connect_timeout_s: float = Field(5.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    """Retries for 429/5xx/connection errors, only before the first token."""
    api_version: str | None = None
    """Azure only."""
    supports_vision: bool = True
    json_schema: bool = True
    """Send a JSON-schema `response_format` for watch verdicts."""
    thinking_control: Literal[
        "auto", "none", "chat_template_kwargs", "think", "reasoning_effort"
    ] = "auto"
    """How `enable_thinking` reaches the server: `auto` picks by server (see the README's
    provider table) and drops the argument for good when the server refuses it."""
    template_opens_think: bool = False
    """The model's chat template opens ``<think>`` itself (DeepSeek-R1, QwQ) and the server
    does not split the reasoning out: the answer stream starts inside the reasoning.
    Learned from the first such answer when unset."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    """Sent with every request; may carry credentials, so kept out of reprs."""
    http_client: Literal["aiohttp", "httpx"] = "aiohttp"
    """The SDK's HTTP transport: its aiohttp one (the default: about half the CPU per
    request and per streamed token) or its default httpx2 one."""


class LlmSettings(_Section):
    """Named providers; each role must be held by at most one of them."""

    providers: dict[str, ProviderSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_provider_per_role(self) -> LlmSettings:
        seen: dict[str, str] = {}
        for name, provider in self.providers.items():
            for role in provider.roles:
                if role in seen:
                    raise ValueError(f"role {role!r} is held by both {seen[role]!r} and {name!r}")
                seen[role] = name
        return self


class ChatSettings(_Section):
    """The tool-calling loop."""

    max_concurrent: int = Field(32, ge=1)
    request_deadline_s: float = Field(300.0, gt=0)
    turn_deadline_s: float = Field(120.0, gt=0)
    tool_timeout_s: float = Field(20.0, gt=0)
    conversation_ttl_s: float = Field(86_400.0, gt=0)
    timezone: str | None = None
    """IANA name for the system prompt; the server's local zone when unset."""


class StoreSettings(_Section):
    """Where events, conversations, watches and the request journal live."""

    url: str = Field("sqlite:///data/lookout.db", repr=False)
    """May hold a database password, so kept out of reprs and logs."""
    retention_days: float = Field(30.0, gt=0)


class UserSettings(_Section):
    """What one caller may do."""

    role: Literal["admin", "viewer"] = "viewer"
    cameras: list[str] | Literal["all"] = "all"


class AuthSettings(_Section):
    """Defaults for callers that are not listed under `users`."""

    default_role: Literal["admin", "viewer"] = "viewer"
    allow_unknown_users: bool = True


class LimitsSettings(_Section):
    """Bounds on what callers may send; each violation is answered naming its key."""

    max_request_bytes: int = Field(262_144, ge=1024)
    """Largest request payload (chat, tool, watch, health)."""
    max_frame_bytes: int = Field(8 * 1024 * 1024, ge=65_536)
    """Largest JPEG accepted on a frame or snapshot topic."""
    max_frigate_bytes: int = Field(1024 * 1024, ge=4096)
    """Largest JSON message accepted from Frigate's topics."""
    requests_per_minute: int = Field(120, ge=0)
    """Per caller, all request kinds together; 0 turns the limit off."""
    max_chat_messages: int = Field(100, ge=1, le=200)
    max_chat_text_chars: int = Field(8000, ge=1, le=16_000)
    max_tool_iterations: int = Field(10, ge=1, le=10)


class LogSettings(_Section):
    """Logging."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class Settings(_Section):
    """The whole configuration."""

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    frigate: FrigateSettings = Field(default_factory=FrigateSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    users: dict[Annotated[str, Field(pattern=NAME_PATTERN)], UserSettings] = Field(
        default_factory=dict
    )
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    homeassistant: HomeAssistantSettings = Field(default_factory=HomeAssistantSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)

    @model_validator(mode="after")
    def _cluster_needs_postgres(self) -> Settings:
        # Ownership across workers lives in PostgreSQL's advisory locks and rows; a SQLite
        # file cannot be shared by processes on several hosts.
        if self.cluster.enabled and not self.store.url.startswith(("postgresql", "postgres:")):
            raise ValueError(
                "cluster.enabled needs store.url on PostgreSQL (postgresql://user@host/db): "
                "the workers share their requests, watches and roles through it"
            )
        return self
