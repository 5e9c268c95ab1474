"""Tools on live cameras: `get_live_context` and `set_camera_state`.

`set_camera_state` fixes what upstream got wrong: ``record`` maps to Frigate's
``recordings`` topic, values are normalised and validated per feature, features Frigate
does not take over MQTT are refused with the reason, and every camera's result says
whether Frigate's retained state topic confirmed the change.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import structlog
from pydantic import Field

from service.frames import FrameError
from service.frigate import LiveObject
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
NUMERIC = {"motion_threshold": (1, 255), "motion_contour_area": (0, 10_000_000)}
"""Frigate's config takes 1-255 for the threshold and puts no bound on the contour area
(a pixel count; 0 lets every contour count, and no frame has more than 4K's 8.3 M)."""
_ON = {"on", "true", "yes", "enable", "enabled", "1"}
_OFF = {"off", "false", "no", "disable", "disabled", "0"}


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
        data["note"] = unconfirmed_note(deps, timeout)
    return ToolResult(data)


def unconfirmed_note(deps: ToolDeps, timeout: float) -> str:
    """Why Frigate did not confirm a command, as far as lookout can tell."""
    available = deps.frigate.available()
    if available in ("offline", "stopped"):
        return (
            f"Frigate is {available} (its frigate/available topic says so): the command was "
            "sent, but nothing confirmed it; check once Frigate is back."
        )
    if available is None:
        return (
            "lookout has not heard whether Frigate is online (frigate/available), and Frigate "
            f"did not answer within {timeout:g} s."
        )
    return (
        f"Frigate did not confirm within {timeout:g} s: it refuses some changes without a word "
        "(for example turning on a feature that is not enabled in its config, or turning "
        "motion off while detect is on)."
    )


async def _set_one(deps: ToolDeps, camera: str, feature: str, value: str, timeout: float) -> str:
    # Only Frigate's own answer to this command counts: a state message that arrives
    # after it, live and while Frigate is online, not the value lookout already holds.
    waiter = asyncio.create_task(
        deps.frigate.wait_state(camera, feature, value, timeout, fresh_only=True),
        name=f"confirm:{camera}:{feature}",
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

    waiter = asyncio.create_task(
        deps.frigate.wait_profile(matches, timeout, fresh_only=True), name="confirm:profile"
    )
    await asyncio.sleep(0)
    await deps.publisher.publish(deps.topics.frigate_profile_set, wanted.encode(), qos=1)
    seen = await waiter
    data: dict[str, Any] = {
        "feature": "profile",
        "value": wanted,
        "status": "confirmed" if seen else "unconfirmed",
    }
    if not seen:
        data["note"] = unconfirmed_note(deps, timeout)
    return ToolResult(data)


class LiveContextArgs(ToolArgs):
    """Arguments of `get_live_context`."""

    camera: str = Field(description="One camera id (not '*').")


async def get_live_context(args: LiveContextArgs, ctx: ToolContext) -> ToolResult:
    """What one camera tracks right now, its settings, and its live frame for a vision model."""
    deps: ToolDeps = ctx.deps
    if args.camera.strip().lower() in ("*", "all", ""):
        raise ToolError(
            "get_live_context looks at one camera; call it once per camera",
            available_cameras=visible_cameras(deps, ctx.access),
        )
    camera = resolve_visible_camera(deps, ctx.access, args.camera)
    info = deps.frigate.camera(camera)
    data: dict[str, Any] = {
        "camera": camera,
        "name": info.friendly_name if info else camera,
        "objects": [live_object(o, deps) for o in deps.frigate.live_objects(camera)],
    }
    if info is not None and info.states:
        data["settings"] = dict(sorted(info.states.items()))
    if deps.frigate.available() in ("offline", "stopped"):
        data["frigate"] = "Frigate is offline: the objects above may be out of date"
    problem = deps.providers.vision_problem()
    if problem is not None:
        data["image"] = f"not available: {problem}"
        return ToolResult(data, image_note=problem if deps.providers.chat else None)
    picked, notes = await deps.frame_picker().pick(camera)
    if picked is None:
        data["frame"] = "; ".join(notes)
        return ToolResult(data)
    data["frame"] = picked.describe()
    try:
        image_url = await deps.frames.prepare_for_model(picked.frame)
    except FrameError as exc:
        data["frame"] = f"the latest frame could not be decoded: {exc}"
        return ToolResult(data)
    return ToolResult(
        data, image_url=image_url, image_camera=camera, image_caption=picked.caption(camera)
    )


def live_object(o: LiveObject, deps: ToolDeps) -> dict[str, Any]:
    """One tracked object as a tool shows it; a face guess is shown as a guess."""
    out: dict[str, Any] = {"label": o.label}
    if o.sub_label:
        out["sub_label"] = o.sub_label
    if o.face and o.face != o.sub_label:
        out["face_guess"] = {
            "name": o.face,
            "score": None if o.face_score is None else round(o.face_score, 2),
            "note": "face recognition's best guess, below Frigate's threshold to name them",
        }
    if o.plate:
        out["plate"] = o.plate
    out["zones"] = list(o.current_zones)
    out["stationary"] = o.stationary
    out["since_local"] = local_text(o.start_time, deps.tz)
    return out


class CameraStateArgs(ToolArgs):
    """Arguments of `get_camera_state`."""

    camera: str | None = Field(
        None, description="Camera id or name; leave out (or '*') for every camera."
    )


async def get_camera_state(args: CameraStateArgs, ctx: ToolContext) -> ToolResult:
    """Read the camera settings Frigate last reported, without changing anything."""
    deps: ToolDeps = ctx.deps
    name = (args.camera or "").strip()
    if name in ("", "*", "all"):
        cameras = visible_cameras(deps, ctx.access)
    else:
        cameras = [resolve_visible_camera(deps, ctx.access, name)]
    out: dict[str, Any] = {}
    for camera in cameras:
        info = deps.frigate.camera(camera)
        out[camera] = {
            "name": info.friendly_name if info else camera,
            "settings": dict(sorted(info.states.items())) if info else {},
        }
    data: dict[str, Any] = {
        "cameras": out,
        "frigate": deps.frigate.available() or "unknown",
        "active_profile": deps.frigate.profile() or "none",
    }
    if deps.frigate.available() in ("offline", "stopped"):
        data["note"] = "Frigate is offline: these are the last states it reported"
    return ToolResult(data)


TOOLS = [
    Tool(
        "get_live_context",
        "See one camera right now: the objects Frigate is tracking (with zones, whether they "
        "are stationary, since when, recognised names; a face_guess is only a guess), the "
        "camera's settings and the live image. For 'is someone at the door', 'is the car in "
        "the driveway'. Call once per camera.",
        LiveContextArgs,
        get_live_context,
    ),
    Tool(
        "get_camera_state",
        "Read camera settings as Frigate last reported them (detect, recordings, snapshots, "
        "motion, audio, notifications, birdseye, review and description switches, motion "
        "numbers) and the active profile, without changing anything. For 'is recording on "
        "at the driveway'.",
        CameraStateArgs,
        get_camera_state,
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
