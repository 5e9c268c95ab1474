"""MQTT: the bus, the topic map, the request envelope, the route table and dispatcher.

:mod:`service.mqtt.bus` is the only module in lookout that imports aiomqtt.
:class:`TopicMap` builds and parses every topic string. :class:`Dispatcher` runs the
route table with a per-message error boundary, journals requests for exactly-once
execution and guarantees one terminal reply per request.
"""

from __future__ import annotations

from service.mqtt.bus import BusAuthError, BusUnavailableError, Message, MqttBus
from service.mqtt.control import ClusterControl, bind_cancels
from service.mqtt.envelope import (
    TERMINAL_TYPES,
    ErrorCode,
    Publisher,
    ReplyChannel,
    Request,
    RequestError,
)
from service.mqtt.health import HealthReporter, HealthRequest
from service.mqtt.journal import Journal
from service.mqtt.limits import Admission
from service.mqtt.router import Dispatcher
from service.mqtt.routes import MessageRoute, RequestContext, RequestRoute
from service.mqtt.topics import Pattern, RequestKind, TopicMap, filter_matches

__all__ = [
    "TERMINAL_TYPES",
    "Admission",
    "BusAuthError",
    "BusUnavailableError",
    "ClusterControl",
    "Dispatcher",
    "ErrorCode",
    "HealthReporter",
    "HealthRequest",
    "Journal",
    "Message",
    "MessageRoute",
    "MqttBus",
    "Pattern",
    "Publisher",
    "ReplyChannel",
    "Request",
    "RequestContext",
    "RequestError",
    "RequestKind",
    "RequestRoute",
    "TopicMap",
    "bind_cancels",
    "filter_matches",
]
