"""The topic map: every topic string lookout reads or writes is built and parsed here.

A :class:`Pattern` is a template such as ``lookout/{user}/health``: ``filter`` gives the
subscription filter (captures become ``+``), ``match`` parses a concrete topic back into
its captures, ``format`` builds one. :class:`TopicMap` binds the two configurable
prefixes (lookout's and Frigate's) once, so no other module concatenates topic strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from service.settings import NAME_RE, RESERVED_USERS, is_zone_name


class RequestKind(StrEnum):
    """The request topics a caller may publish to, as the path after ``<prefix>/<user>/``."""

    HEALTH = "health"
    CHAT = "chat"
    CHAT_CANCEL = "chat/cancel"
    TOOL = "tool"
    WATCH = "watch"


@dataclass(frozen=True, slots=True)
class Pattern:
    """A topic template whose ``{name}`` parts each stand for exactly one level.

    A capture must be a safe name (:data:`~service.settings.NAME_RE`), except a
    ``{zone}`` capture, which takes any zone name Frigate allows
    (:func:`~service.settings.is_zone_name`).
    """

    template: str
    _levels: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_levels", tuple(self.template.split("/")))

    @property
    def filter(self) -> str:
        """The subscription filter: every capture becomes ``+``."""
        return "/".join("+" if _is_capture(level) else level for level in self._levels)

    def match(self, topic: str) -> dict[str, str] | None:
        """The captures of ``topic``; ``None`` when it does not fit or a capture is unsafe."""
        parts = topic.split("/")
        if len(parts) != len(self._levels):
            return None
        captures: dict[str, str] = {}
        for level, part in zip(self._levels, parts, strict=True):
            if _is_capture(level):
                if not _capture_ok(level, part):
                    return None
                captures[level[1:-1]] = part
            elif level != part:
                return None
        return captures

    def format(self, **values: str) -> str:
        """Build a concrete topic; every value must be one safe level."""
        out = []
        for level in self._levels:
            if _is_capture(level):
                value = values[level[1:-1]]
                if not _capture_ok(level, value):
                    raise ValueError(f"{value!r} is not a valid topic level for {level}")
                out.append(value)
            else:
                out.append(level)
        return "/".join(out)


def _is_capture(level: str) -> bool:
    return level.startswith("{") and level.endswith("}")


def _capture_ok(level: str, value: str) -> bool:
    if level == "{zone}":
        return is_zone_name(value)
    return NAME_RE.fullmatch(value) is not None


class TopicMap:
    """All of lookout's topics for one pair of prefixes."""

    def __init__(self, prefix: str = "lookout", frigate_prefix: str = "frigate") -> None:
        self.prefix = prefix
        self.frigate_prefix = frigate_prefix
        p, f = prefix, frigate_prefix
        # lookout's own surface
        self.status = f"{p}/status"
        self.tools = f"{p}/tools"
        self.requests = {kind: Pattern(f"{p}/{{user}}/{kind.value}") for kind in RequestKind}
        self.reply = Pattern(f"{p}/{{user}}/reply/{{id}}")
        self.frame = Pattern(f"{p}/camera/{{camera}}/frame")
        self.watch_state = Pattern(f"{p}/{{user}}/watch/{{job_id}}")
        self.watch_alert = Pattern(f"{p}/{{user}}/watch/{{job_id}}/alert")
        self.watch_snapshot = Pattern(f"{p}/{{user}}/watch/{{job_id}}/snapshot")
        # Frigate's surface
        self.frigate_available = f"{f}/available"
        self.frigate_events = f"{f}/events"
        self.frigate_reviews = f"{f}/reviews"
        self.frigate_tracked_object_update = f"{f}/tracked_object_update"
        self.frigate_profile_state = f"{f}/profile/state"
        self.frigate_profile_set = f"{f}/profile/set"
        self.frigate_camera_monitoring = f"{f}/camera_monitoring"
        self.frigate_camera_activity = f"{f}/camera_activity"
        self.frigate_on_connect = f"{f}/onConnect"
        self.frigate_state = Pattern(f"{f}/{{camera}}/{{feature}}/state")
        self.frigate_set = Pattern(f"{f}/{{camera}}/{{feature}}/set")
        self.frigate_snapshot = Pattern(f"{f}/{{camera}}/{{label}}/snapshot")
        self.frigate_motion = Pattern(f"{f}/{{camera}}/motion")

    def request_kind(self, topic: str) -> tuple[RequestKind, str] | None:
        """Parse a request topic into its kind and caller, or ``None``."""
        for kind, pattern in self.requests.items():
            captures = pattern.match(topic)
            if captures is not None and captures["user"] not in RESERVED_USERS:
                return kind, captures["user"]
        return None

    def reply_allowed(self, user: str, topic: str, protected: tuple[str, ...] = ()) -> bool:
        """Whether lookout may publish a caller's replies to ``topic``.

        A reply topic is chosen by the caller, so it must not let one caller write into
        another's namespace, into lookout's own request, status or frame topics, into
        Frigate's topics (a `<camera>/<feature>/set` is a command) or into ``protected``
        prefixes such as Home Assistant's discovery topics.
        """
        if not is_valid_publish_topic(topic):
            return False
        for prefix in (self.frigate_prefix, *protected):
            if topic == prefix or topic.startswith(prefix + "/"):
                return False
        if topic == self.prefix or topic.startswith(self.prefix + "/"):
            owner = topic[len(self.prefix) + 1 :].split("/", 1)[0]
            return owner == user and self.request_kind(topic) is None
        return True

    def default_reply(self, user: str, request_id: str) -> str:
        """Where replies go when the request names no other place."""
        return self.reply.format(user=user, id=request_id)


def is_valid_publish_topic(topic: str) -> bool:
    """Whether a client-supplied reply topic is something we may publish to."""
    return (
        0 < len(topic) <= 512
        and "+" not in topic
        and "#" not in topic
        and "\x00" not in topic
        and not topic.startswith("$")
    )


def filter_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches an MQTT subscription filter (``+`` and ``#`` wildcards)."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for index, level in enumerate(f_levels):
        if level == "#":
            return True
        if index >= len(t_levels):
            return False
        if level not in ("+", t_levels[index]):
            return False
    return len(f_levels) == len(t_levels)
