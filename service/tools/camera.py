"""Tools on live cameras: `get_live_context` and `set_camera_state`.

`set_camera_state` fixes what upstream got wrong: ``record`` maps to Frigate's
``recordings`` topic, values are normalised and validated per feature, features Frigate
does not take over MQTT are refused with the reason, and every camera's result says
whether Frigate's retained state topic confirmed the change.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import structlog
from pydantic import Field

from service.frames import FrameError, fetch_latest_jpeg
from service.mqtt import ErrorCode
from service.tools.deps import ToolDeps, resolve_visible_camera, visible_cameras
from service.tools.registry import Tool, ToolArgs, ToolContext, ToolError, ToolResult
from service.tools.timeparse import local_text

log = structlog.get_logger(__name__)

Feature = Literal[
    "detect", "record", "snapshots", "audio", "motion", "enabled", "birdseye", "birdseye_mode",
    "improve_contrast", "ptz_autotracker", "motion_contour_area", "motion_threshold",
    "notifications", "audio_transcription", "review_alerts", "review_detections",
    "object_descriptions", "review_descriptions", "profile",
]  # fmt: skip

TOPIC_NAME = {"record": "recordings"}
"""The chat-facing name where Frigate's MQTT topic differs."""
NOT_OVER_MQTT = {
    "audio_transcription": "Frigate does not accept audio_transcription over MQTT; "
    "change it in Frigate's UI or config",
}
BIRDSEYE_MODES = ("CONTINUOUS", "MOTION", "OBJECTS")
NUMERIC = {"motion_threshold": (1, 255), "motion_contour_area": (1, 10_000)}
_ON = {"on", "true", "yes", "enable", "enabled", "1"}
_OFF = {"off", "false", "no", "disable", "disabled", "0"}
STALE_FRAME_S = 60.0


def normalise_value(feature: str, value: str) -> str:
    """Frigate's spelling of ``value`` for ``feature``.

    Raises:
        ToolError: The value is not valid for the feature.
    """
    raw = value.strip()
    if feature == "birdseye_mode":
        upper = raw.upper()
        if upper not in BIRDSEYE_MODES:
            raise ToolError(
                f"birdseye_mode takes one of {', '.join(BIRDSEYE_MODES)}, not {value!r}"
            )
        return upper
    if feature in NUMERIC:
        low, high = NUMERIC[feature]
        try:
            number = int(float(raw))
        except ValueError:
            raise ToolError(f"{feature} takes a whole number from {low} to {high}") from None
        if not low <= number <= high:
            raise ToolError(f"{feature} takes a whole number from {low} to {high}, not {number}")
        return str(number)
    if raw.lower() in _ON:
        return "ON"
    if raw.lower() in _OFF:
        return "OFF"
    raise ToolError(f"{feature} takes ON or OFF, not {value!r}")


class SetCameraStateArgs(ToolArgs):
    """Arguments of `set_camera_state`."""

    camera: str = Field(description="Camera id, or '*' for every camera.")
    feature: Feature = Field(
        description="What to change. Most take ON or OFF; birdseye_mode takes CONTINUOUS, MOTION "
        "or OBJECTS; motion_threshold and motion_contour_area take a number; profile takes a "
        "profile name or 'none' and needs camera '*'."
    )
    value: str = Field(description="ON/OFF, a mode, a number, or a profile name.")


async def set_camera_state(args: SetCameraStateArgs, ctx: ToolContext) -> ToolResult:
    """Publish a Frigate command and report whether Frigate confirmed it."""
    deps: ToolDeps = ctx.deps
    if not ctx.access.is_admin:
        raise ToolError("changing camera settings needs the admin role", ErrorCode.FORBIDDEN)
    if args.feature in NOT_OVER_MQTT:
        raise ToolError(NOT_OVER_MQTT[args.feature])
    timeout = deps.settings.frigate.confirm_timeout_s
    if args.feature == "profile":
        return await _set_profile(args, deps, timeout)
    value = normalise_value(args.feature, args.value)
    if args.camera.strip() == "*":
        cameras = visible_cameras(deps, ctx.access)
        if not cameras:
            raise ToolError("no cameras are known yet", ErrorCode.NOT_FOUND)
    else:
        cameras = [resolve_visible_camera(deps, ctx.access, args.camera)]
    feature = TOPIC_NAME.get(args.feature, args.feature)
    results = await asyncio.gather(
        *(_set_one(deps, cam, feature, value, timeout) for cam in cameras)
    )
    outcome = dict(zip(cameras, results, strict=True))
    data: dict[str, Any] = {"feature": args.feature, "value": value, "cameras": outcome}
    if "unconfirmed" in outcome.values():
        data["note"] = (
            f"Frigate did not confirm within {timeout:g} s: it may be offline, or refused the "
            "change (for example the feature is not enabled in its config, or motion cannot be "
            "turned off while detect is on)."
        )
    return ToolResult(data)


async def _set_one(deps: ToolDeps, camera: str, feature: str, value: str, timeout: float) -> str:
    waiter = asyncio.create_task(
        deps.frigate.wait_state(camera, feature, value, timeout), name=f"confirm:{camera}:{feature}"
    )
    # Yield once so the waiter is registered before the command goes out.
    await asyncio.sleep(0)
    await deps.publisher.publish(
        deps.topics.frigate_set.format(camera=camera, feature=feature), value.encode(), qos=1
    )
    log.info("camera_command_sent", camera=camera, feature=feature, value=value)
    return "confirmed" if await waiter is not None else "unconfirmed"


async def _set_profile(args: SetCameraStateArgs, deps: ToolDeps, timeout: float) -> ToolResult:
    if args.camera.strip() != "*":
        raise ToolError("profile applies to every camera: call it with camera '*'")
    value = args.value.strip()
    if not value:
        raise ToolError("name a profile, or 'none' to deactivate")
    wanted = "none" if value.lower() in ("none", "off") else value

    def matches(state: str) -> bool:
        return state.strip().lower() == wanted.lower()

    await deps.publisher.publish(deps.topics.frigate_profile_set, wanted.encode(), qos=1)
    seen = await deps.frigate.wait_profile(matches, timeout)
    return ToolResult(
        {"feature": "profile", "value": wanted, "status": "confirmed" if seen else "unconfirmed"}
    )


class LiveContextArgs(ToolArgs):
    """Arguments of `get_live_context`."""

    camera: str = Field(description="One camera id (not '*').")


async def get_live_context(args: LiveContextArgs, ctx: ToolContext) -> ToolResult:
    """What one camera tracks right now, and its live frame for a vision model."""
    deps: ToolDeps = ctx.deps
    if args.camera.strip().lower() in ("*", "all", ""):
        raise ToolError(
            "get_live_context looks at one camera; call it once per camera",
            available_cameras=visible_cameras(deps, ctx.access),
        )
    camera = resolve_visible_camera(deps, ctx.access, args.camera)
    info = deps.frigate.camera(camera)
    objects = [
        {
            "label": o.label,
            **({"sub_label": o.sub_label} if o.sub_label else {}),
            "zones": list(o.current_zones),
            "stationary": o.stationary,
            "since_local": local_text(o.start_time, deps.tz),
        }
        for o in deps.frigate.live_objects(camera)
    ]
    data: dict[str, Any] = {
        "camera": camera,
        "name": info.friendly_name if info else camera,
        "objects": objects,
    }
    if deps.frigate.available() in ("offline", "stopped"):
        data["frigate"] = "Frigate is offline: the objects above may be out of date"
    image_url = await _frame(deps, camera, data) if deps.providers.vision is not None else None
    if deps.providers.vision is None:
        data["image"] = "not available: no vision model is configured"
    return ToolResult(data, image_url=image_url, image_camera=camera)


async def _frame(deps: ToolDeps, camera: str, data: dict[str, Any]) -> str | None:
    frame = deps.frames.latest(camera)
    url = deps.settings.frigate.url
    if (frame is None or time.time() - frame.received_at > STALE_FRAME_S) and url:
        try:
            jpeg = await fetch_latest_jpeg(url, camera, deps.settings.frigate.api_timeout_s)
            frame = deps.frames.put(camera, jpeg, source="http") or frame
        except FrameError as exc:
            data["frame_fetch"] = f"Frigate's latest.jpg failed: {exc}"
    if frame is None:
        data["frame"] = "no frame has been received from this camera"
        return None
    age = time.time() - frame.received_at
    data["frame"] = {"source": frame.source, "age_s": round(age, 1)}
    if frame.source == "snapshot":
        data["frame"]["note"] = "a cropped snapshot of the last object, not the whole scene"
    if age > STALE_FRAME_S:
        data["frame"]["note"] = "old frame: the camera has not sent a newer one"
    try:
        return await deps.frames.prepare_for_model(frame)
    except FrameError as exc:
        data["frame"] = f"the latest frame could not be decoded: {exc}"
        return None


TOOLS = [
    Tool(
        "get_live_context",
        "See one camera right now: the objects Frigate is tracking (with zones, whether they "
        "are stationary, since when) and the live image. For 'is someone at the door', "
        "'is the car in the driveway'. Call once per camera.",
        LiveContextArgs,
        get_live_context,
    ),
    Tool(
        "set_camera_state",
        "Change a camera setting in Frigate (detection, recording, snapshots, motion, "
        "notifications, birdseye, review and description features) or the active profile. "
        "Only when the user explicitly asks. Needs the admin role. Reports for each camera "
        "whether Frigate confirmed the change.",
        SetCameraStateArgs,
        set_camera_state,
    ),
]
