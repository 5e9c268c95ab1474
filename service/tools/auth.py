"""Who may do what: a caller's role and the cameras it may see.

MQTT carries no identity, so the caller is the ``<user>`` level of the request topic
and the broker's ACL is what makes that true (see ``mosquitto/acl.example``). Every
tool and request kind asks an :class:`Access` before it reads or touches a camera.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from service.mqtt import ErrorCode, RequestError
from service.settings import Settings


@dataclass(frozen=True, slots=True)
class Access:
    """One caller's rights; ``cameras is None`` means every camera."""

    user: str
    role: Literal["admin", "viewer"]
    cameras: frozenset[str] | None

    @property
    def is_admin(self) -> bool:
        """Admins change camera settings and see everyone's watches and conversations."""
        return self.role == "admin"

    def can_see(self, camera: str) -> bool:
        """Whether the caller may see ``camera``."""
        return self.cameras is None or camera in self.cameras

    def visible(self, cameras: Iterable[str]) -> list[str]:
        """The subset of ``cameras`` the caller may see, order kept."""
        return [c for c in cameras if self.can_see(c)]

    def require_admin(self, what: str) -> None:
        """Raise ``forbidden`` unless the caller is an admin."""
        if not self.is_admin:
            raise RequestError(ErrorCode.FORBIDDEN, f"{what} needs the admin role")

    def owns(self, owner: str) -> bool:
        """Whether the caller may act on something that belongs to ``owner``."""
        return self.is_admin or owner == self.user


def access_for(settings: Settings, user: str) -> Access:
    """The rights of ``user``.

    Raises:
        RequestError: ``forbidden`` when unknown users are not allowed.
    """
    configured = settings.users.get(user)
    if configured is None:
        if not settings.auth.allow_unknown_users:
            raise RequestError(ErrorCode.FORBIDDEN, f"user {user!r} is not allowed to use lookout")
        return Access(user, settings.auth.default_role, None)
    cameras = None if configured.cameras == "all" else frozenset(configured.cameras)
    return Access(user, configured.role, cameras)
