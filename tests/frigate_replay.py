"""A realistic Frigate MQTT session to replay into the mirror (or over a real broker).

Three cameras publish their retained feature states and zone states, Frigate is
``online`` with profile ``away``; then:

- ``front_door``: a person walks up the walkway onto the porch, face recognition names
  her Alice, she stands still at the door, moves again and leaves (event ends, GenAI
  describes her afterwards); a second person arrives and is still on the porch at the
  end. Review ``front`` goes new -> update (alert) -> end -> genai (title/scene/threat).
- ``driveway``: LPR reads the plate of a car before Frigate publishes the car's
  ``new`` (a real ordering: LPR works on the first frames, ``new`` waits for the false
  positive filter); the car parks in ``parking`` and is still there at the end (stationary).
  Review ``driveway`` stays open. (``ReplaySession.reviews`` uses these names.)
- ``backyard``: a dog crosses the lawn to the patio and leaves; a cat appears briefly.
  Review ``backyard`` new -> end.

Count topics (``frigate/<camera>/<label>`` and the look-alike ``frigate/<zone>/<label>``),
``frigate/stats`` and snapshots are mixed in as Frigate sends them.

Use :func:`frigate_session` for the ``(topic, payload, retain)`` list, or
:func:`build_session` for the list plus the ids and facts a test asserts on.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from service.mqtt.topics import Pattern, TopicMap

Message = tuple[str, bytes, bool]

CAMERA_ZONES: dict[str, list[str]] = {
    "front_door": ["porch", "walkway"],
    "driveway": ["driveway_entrance", "parking"],
    "backyard": ["lawn", "patio"],
}
FEATURES_ON = (
    "enabled", "detect", "recordings", "snapshots", "audio", "motion", "improve_contrast",
    "review_alerts", "review_detections", "object_descriptions", "review_descriptions",
    "birdseye",
)  # fmt: skip
STATE_OVERRIDES = {("backyard", "recordings"): "OFF", ("driveway", "audio"): "OFF"}
PROFILE = "away"
# A small valid JPEG (64x48), as Frigate's snapshot topics carry JPEG bytes.
SNAPSHOT_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb0043000a07070807060a0808080b0a0a0b0e1810"
    "0e0d0d0e1d15161118231f2524221f2221262b372f26293429212230413134393b3e3e3e252e4449433c"
    "48373d3e3bffdb0043010a0b0b0e0d0e1c10101c3b2822283b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b"
    "3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3bffc00011080030004003"
    "012200021101031101ffc4001f0000010501010101010100000000000000000102030405060708090a0b"
    "ffc400b5100002010303020403050504040000017d010203000411051221314106135161072271143281"
    "91a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a434445464748"
    "494a535455565758595a636465666768696a737475767778797a838485868788898a9293949596979899"
    "9aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5"
    "e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffc4001f0100030101010101010101010000000000000102030405"
    "060708090a0bffc400b51100020102040403040705040400010277000102031104052131061241510761"
    "711322328108144291a1b1c109233352f0156272d10a162434e125f11718191a262728292a3536373839"
    "3a434445464748494a535455565758595a636465666768696a737475767778797a82838485868788898a"
    "92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7"
    "d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9faffda000c03010002110311003f006d14515e79dc14"
    "552d46e2583cbf29f6eece7807d2a8ff00685d7fcf5ffc747f854b92477d1cbead6829c5ab3febb1b745"
    "627f685d7fcf5ffc747f856c40c5e08d98e4b2824fe14295ccf1183a98749c9ad7b0fa28a2a8e40a28a2"
    "8033757ff963ff0002fe959b5a5abffcb1ff00817f4acdaca5b9f5197ffbb47e7f9b0ae82dbfe3d62ff7"
    "07f2ae7eba0b6ff8f58bfdc1fca9c0e5cdbe08fa92514515a1e08514514019babffcb1ff00817f4acdae"
    "89e38e4c6f456c74dc334dfb341ff3c23ffbe05438dd9ebe1b308d1a4a0e3b1cfd7416dff1eb17fb83f9"
    "51f6683fe7847ff7c0a9000a0000003a014e31b18e33191c44524ad60a28a2a8f38fffd9"
)


@dataclass
class ReplaySession:
    """The messages of one session and the facts a test checks them against."""

    messages: list[Message] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)
    """Short name (``alice``, ``car``, ``dog``, ``cat``, ``visitor``) -> Frigate id."""
    reviews: dict[str, str] = field(default_factory=dict)
    live_at_end: dict[str, list[str]] = field(default_factory=dict)
    """Camera -> short names of objects still tracked when the session ends."""


def tracked_object(
    oid: str,
    camera: str,
    label: str,
    start: float,
    frame: float,
    *,
    current: list[str] | None = None,
    entered: list[str] | None = None,
    sub_label: list[Any] | None = None,
    stationary: bool = False,
    score: float = 0.8,
    top: float = 0.85,
    end: float | None = None,
    plate: str | None = None,
) -> dict[str, Any]:
    """A tracked object with the fields ``TrackedObject.to_dict`` sends (Frigate 0.17/0.18).

    As Frigate's code has it, not its docs: ``recognized_license_plate`` is
    ``[plate, score]`` (no separate score key), there is no ``thumbnail`` key, and
    ``snapshot`` carries eleven keys.
    """
    box = [412, 310, 540, 705]
    return {
        "id": oid,
        "camera": camera,
        "frame_time": frame,
        "snapshot": {
            "frame_time": frame,
            "box": box,
            "area": 50432,
            "region": [300, 250, 700, 650],
            "score": score,
            "attributes": [],
            "current_estimated_speed": 0,
            "velocity_angle": 0,
            "path_data": [[[0.52, 0.71], frame]],
            "recognized_license_plate": plate,
            "recognized_license_plate_score": 0.93 if plate else None,
        },
        "snapshot_clean": True,
        "label": label,
        "sub_label": sub_label,
        "top_score": top,
        "false_positive": False,
        "start_time": start,
        "end_time": end,
        "score": score,
        "computed_score": score,
        "box": box,
        "area": 50432,
        "ratio": 0.324,
        "region": [300, 250, 700, 650],
        "active": not stationary,
        "stationary": stationary,
        "motionless_count": 120 if stationary else 0,
        "position_changes": 1,
        "current_zones": current or [],
        "entered_zones": entered or [],
        "has_clip": end is not None,
        "has_snapshot": end is not None,
        "attributes": {"face": 0.82} if label == "person" else {},
        "current_attributes": [],
        "pending_loitering": False,
        "max_severity": "alert" if label == "person" else "detection",
        "current_estimated_speed": 0,
        "average_estimated_speed": 0,
        "velocity_angle": 0,
        "path_data": [[[0.52, 0.71], frame]],
        "recognized_license_plate": [plate, 0.93] if plate else None,
    }


def review_object(
    rid: str,
    camera: str,
    start: float,
    severity: str,
    *,
    detections: list[str],
    objects: list[str],
    zones: list[str],
    sub_labels: list[str] | None = None,
    end: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "detections": detections,
        "objects": objects,
        "sub_labels": sub_labels or [],
        "zones": zones,
        "audio": [],
    }
    if metadata is not None:
        data["metadata"] = metadata
    return {
        "id": rid,
        "camera": camera,
        "start_time": start,
        "end_time": end,
        "severity": severity,
        "thumb_path": f"/media/frigate/clips/review/thumb-{camera}-{rid}.webp",
        "data": data,
    }


class _Builder:
    def __init__(self, topics: TopicMap) -> None:
        self.t = topics
        # Zone state and count topics have no entry in TopicMap; declared as patterns here.
        self.zone_state = Pattern(f"{topics.frigate_prefix}/{{camera}}/zone/{{zone}}/state")
        self.count = Pattern(f"{topics.frigate_prefix}/{{camera}}/{{label}}")
        self.now = 0.0
        """Publish time of the next message; the session is sorted by it at the end."""
        self.out: list[tuple[float, int, Message]] = []
        self._last: dict[str, dict[str, Any]] = {}
        self._last_review: dict[str, dict[str, Any]] = {}

    def raw(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        body = payload.encode() if isinstance(payload, str) else payload
        self.out.append((self.now, len(self.out), (topic, body, retain)))

    def json(self, topic: str, value: dict[str, Any]) -> None:
        self.raw(topic, json.dumps(value))

    def event(self, kind: str, after: dict[str, Any]) -> None:
        self.now = after["frame_time"] + 0.05
        before = self._last.get(after["id"]) or dict(after, frame_time=after["frame_time"] - 0.2)
        self.json(self.t.frigate_events, {"type": kind, "before": before, "after": after})
        self._last[after["id"]] = copy.deepcopy(after)

    def update(self, value: dict[str, Any]) -> None:
        self.json(self.t.frigate_tracked_object_update, value)

    def review(self, kind: str, after: dict[str, Any]) -> None:
        before = self._last_review.get(after["id"], after)
        self.json(self.t.frigate_reviews, {"type": kind, "before": before, "after": after})
        self._last_review[after["id"]] = copy.deepcopy(after)

    def snapshot(self, camera: str, label: str) -> None:
        self.raw(self.t.frigate_snapshot.format(camera=camera, label=label), SNAPSHOT_JPEG, True)

    def counts(self, place: str, label: str, value: int) -> None:
        self.raw(self.count.format(camera=place, label=label), str(value))


def _retained(b: _Builder) -> None:
    b.raw(b.t.frigate_available, "online", retain=True)
    for camera, zones in CAMERA_ZONES.items():
        for feature in FEATURES_ON:
            value = STATE_OVERRIDES.get((camera, feature), "ON")
            b.raw(b.t.frigate_state.format(camera=camera, feature=feature), value, retain=True)
        for feature, value in (
            ("ptz_autotracker", "OFF"),
            ("motion_threshold", "30"),
            ("motion_contour_area", "10"),
            ("birdseye_mode", "OBJECTS"),
        ):
            b.raw(b.t.frigate_state.format(camera=camera, feature=feature), value, retain=True)
        for zone in zones:
            b.raw(b.zone_state.format(camera=camera, zone=zone), "ON", retain=True)
    b.raw(b.t.frigate_profile_state, PROFILE, retain=True)


def _front_door(b: _Builder, t0: float, s: ReplaySession) -> None:
    cam = "front_door"
    alice = s.ids["alice"] = f"{t0 + 1.0:.6f}-k3x9qa"
    visitor = s.ids["visitor"] = f"{t0 + 200.0:.6f}-p0v7de"
    review = s.reviews["front"] = f"{t0 + 1.2:.6f}-fqk5ka"
    st = t0 + 1.0
    b.event("new", tracked_object(alice, cam, "person", st, st + 0.8, score=0.72, top=0.72))
    rv = review_object(
        review, cam, t0 + 1.2, "detection", detections=[alice], objects=["person"], zones=[]
    )
    b.review("new", rv)
    b.counts(cam, "person", 1)
    walk = ["walkway"]
    b.event("update", tracked_object(alice, cam, "person", st, st + 4, current=walk, entered=walk))
    both = ["walkway", "porch"]
    b.event(
        "update", tracked_object(alice, cam, "person", st, st + 9, current=["porch"], entered=both)
    )
    b.counts("porch", "person", 1)  # a zone count: looks like frigate/<camera>/<label>
    b.update({"type": "face", "id": alice, "name": "Alice", "score": 0.91, "camera": cam,
              "timestamp": st + 9.5})  # fmt: skip
    named = {"sub_label": ["Alice", 0.91], "current": ["porch"], "entered": both, "top": 0.93}
    b.event("update", tracked_object(alice, cam, "person", st, st + 10, **named))
    b.review("update", review_object(review, cam, t0 + 1.2, "alert", detections=[alice],
                               objects=["person"], zones=both, sub_labels=["Alice"]))  # fmt: skip
    b.snapshot(cam, "person")
    b.event("update", tracked_object(alice, cam, "person", st, st + 40, stationary=True, **named))
    b.event("update", tracked_object(alice, cam, "person", st, st + 75, **named))  # moves again
    b.event("end", tracked_object(alice, cam, "person", st, st + 90, end=st + 90, **named))
    b.counts(cam, "person", 0)
    ended = review_object(review, cam, t0 + 1.2, "alert", detections=[alice], objects=["person"],
                    zones=both, sub_labels=["Alice"], end=st + 95)  # fmt: skip
    b.now = st + 95.1
    b.review("end", ended)
    b.now = st + 110.0  # GenAI descriptions come some seconds after the object ends
    b.update({"type": "description", "id": alice, "camera": cam,
              "description": "A woman in a red coat leaves a parcel on the porch and walks away."})  # fmt: skip
    metadata = {
        "title": "Parcel delivered by Alice",
        "scene": "Alice walks up the path, waits at the door, leaves a parcel and goes.",
        "shortSummary": "Alice delivered a parcel.",
        "observations": ["person on porch", "parcel left at door"],
        "confidence": 0.9,
        "potential_threat_level": 0,
        "time": "Tuesday, 09:14",
    }
    b.now = st + 130.0
    b.review("genai", dict(ended, data=dict(ended["data"], metadata=metadata)))
    vs = t0 + 200.0
    b.event("new", tracked_object(visitor, cam, "person", vs, vs + 0.5, current=walk, entered=walk))
    b.event(
        "update",
        tracked_object(visitor, cam, "person", vs, vs + 6, current=["porch"], entered=both),
    )
    s.live_at_end.setdefault(cam, []).append("visitor")


def _driveway(b: _Builder, t0: float, s: ReplaySession) -> None:
    cam = "driveway"
    car = s.ids["car"] = f"{t0 + 30.0:.6f}-c4r1zz"
    review = s.reviews["driveway"] = f"{t0 + 30.5:.6f}-dr1vew"
    st = t0 + 30.0
    # LPR reads the plate before the car passes the false-positive filter.
    b.now = st + 0.4
    b.update({"type": "lpr", "id": car, "name": "Bob's Car", "plate": "ABC123", "score": 0.93,
              "camera": cam, "timestamp": st + 0.4})  # fmt: skip
    gate = ["driveway_entrance"]
    b.event("new", tracked_object(car, cam, "car", st, st + 1, current=gate, entered=gate))
    b.review("new", review_object(review, cam, t0 + 30.5, "detection", detections=[car],
                            objects=["car"], zones=gate))  # fmt: skip
    both = ["driveway_entrance", "parking"]
    known = {"sub_label": ["Bob's Car", 0.93], "plate": "ABC123", "entered": both}
    b.event("update", tracked_object(car, cam, "car", st, st + 8, current=["parking"], **known))
    b.snapshot(cam, "car")
    b.event("update", tracked_object(car, cam, "car", st, st + 70, current=["parking"], stationary=True,
                              **known))  # fmt: skip
    b.review("update", review_object(review, cam, t0 + 30.5, "detection", detections=[car],
                               objects=["car"], zones=both, sub_labels=["Bob's Car"]))  # fmt: skip
    s.live_at_end.setdefault(cam, []).append("car")


def _backyard(b: _Builder, t0: float, s: ReplaySession) -> None:
    cam = "backyard"
    dog = s.ids["dog"] = f"{t0 + 100.0:.6f}-d0g5xq"
    cat = s.ids["cat"] = f"{t0 + 150.0:.6f}-c4t0aa"
    review = s.reviews["backyard"] = f"{t0 + 100.3:.6f}-byrd01"
    st = t0 + 100.0
    lawn = ["lawn"]
    b.event(
        "new", tracked_object(dog, cam, "dog", st, st + 1, current=lawn, entered=lawn, score=0.7)
    )
    b.review("new", review_object(review, cam, t0 + 100.3, "detection", detections=[dog],
                            objects=["dog"], zones=lawn))  # fmt: skip
    both = ["lawn", "patio"]
    b.event("update", tracked_object(dog, cam, "dog", st, st + 12, current=["patio"], entered=both))
    b.event("end", tracked_object(dog, cam, "dog", st, st + 25, entered=both, end=st + 25))
    b.review("end", review_object(review, cam, t0 + 100.3, "detection", detections=[dog],
                            objects=["dog"], zones=both, end=st + 30))  # fmt: skip
    cs = t0 + 150.0
    b.event("new", tracked_object(cat, cam, "cat", cs, cs + 0.6, score=0.66, top=0.7))
    b.event("end", tracked_object(cat, cam, "cat", cs, cs + 4, end=cs + 4, score=0.66, top=0.7))
    b.snapshot(cam, "dog")


def build_session(base_time: float, frigate_prefix: str = "frigate") -> ReplaySession:
    """Build the whole session, timestamps counted from ``base_time`` (unix seconds)."""
    builder = _Builder(TopicMap(frigate_prefix=frigate_prefix))
    session = ReplaySession()
    builder.now = base_time
    _retained(builder)
    builder.json(f"{frigate_prefix}/stats", {"service": {"uptime": 1234, "version": "0.17.0"}})
    _front_door(builder, base_time, session)
    _driveway(builder, base_time, session)
    _backyard(builder, base_time, session)
    session.messages = [message for _, _, message in sorted(builder.out)]
    return session


def frigate_session(base_time: float, frigate_prefix: str = "frigate") -> list[Message]:
    """The session's ``(topic, payload, retain)`` messages in publish order."""
    return build_session(base_time, frigate_prefix).messages
