"""Friendly names from Frigate's HTTP API (``GET /api/config``), fetched once at start.

Optional: lookout learns cameras and zones from MQTT alone. When ``frigate.url`` is set,
the config adds every camera (even one that has published nothing yet), its zones, and
their ``friendly_name``. Any failure is logged and the service carries on without it.
"""

from __future__ import annotations

from typing import Any

import httpx2
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from service.settings import NAME_RE, CameraSettings, is_zone_name

log = structlog.get_logger(__name__)

MAX_CONFIG_BYTES = 16 * 1024 * 1024


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _ApiZone(_Model):
    friendly_name: str | None = None


class _ApiCamera(_Model):
    friendly_name: str | None = None
    zones: dict[str, _ApiZone | None] = {}


class _ApiConfig(_Model):
    cameras: dict[str, _ApiCamera] = {}


def _safe_url(url: str) -> str:
    """The URL without credentials or query, for logs."""
    parsed = httpx2.URL(url)
    return str(parsed.copy_with(username=None, password=None, query=None))


def _name(value: str | None) -> str | None:
    text = (value or "").strip()
    return text[:128] or None


async def import_frigate_config(
    url: str, timeout: float, *, transport: httpx2.AsyncBaseTransport | None = None
) -> dict[str, CameraSettings] | None:
    """Fetch ``<url>/api/config`` and return its cameras, zones and friendly names.

    Args:
        url: Frigate's base URL (``http://frigate:5000``).
        timeout: Seconds for the whole request.
        transport: For tests (``httpx2.MockTransport``).

    Returns:
        Camera id -> names, or ``None`` if Frigate could not be asked (logged).
    """
    endpoint = url.rstrip("/") + "/api/config"
    try:
        async with httpx2.AsyncClient(timeout=timeout, transport=transport) as client:
            response = await client.get(endpoint, headers={"Accept": "application/json"})
            response.raise_for_status()
            if len(response.content) > MAX_CONFIG_BYTES:
                raise ValueError("config too large")
            config = _ApiConfig.model_validate_json(response.content)
    except (httpx2.HTTPError, httpx2.InvalidURL, ValidationError, ValueError) as exc:
        log.warning(
            "frigate_config_import_failed",
            url=_safe_url(url) if "://" in url else "(invalid)",
            error=f"{type(exc).__name__}: {exc}"[:300],
        )
        return None
    cameras: dict[str, CameraSettings] = {}
    for camera, entry in config.cameras.items():
        if not NAME_RE.fullmatch(camera):
            continue
        zones: dict[str, Any] = {
            zone: _name(zcfg.friendly_name if zcfg else None) or ""
            for zone, zcfg in entry.zones.items()
            if is_zone_name(zone)
        }
        cameras[camera] = CameraSettings(friendly_name=_name(entry.friendly_name), zones=zones)
    log.info("frigate_config_imported", cameras=len(cameras))
    return cameras
