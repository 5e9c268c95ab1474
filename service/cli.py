"""The `lookout` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from service import __version__
from service.settings import ConfigError, Settings, load_settings

EXIT_CONFIG = 2
EXIT_AUTH = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookout",
        description="Talk to your cameras over MQTT: LLM chat with tools and VLM camera watches.",
    )
    parser.add_argument("--version", action="version", version=f"lookout {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", "-c", metavar="PATH", help="YAML config file (default: $LOOKOUT_CONFIG)"
    )
    common.add_argument("--host", help="broker host (overrides mqtt.host)")
    common.add_argument("--port", type=int, help="broker port (overrides mqtt.port)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="run the worker until SIGTERM or Ctrl-C")
    sub.add_parser("check-config", parents=[common], help="validate the configuration and exit")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    overrides = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    if overrides:
        mqtt = settings.mqtt.model_validate({**settings.mqtt.model_dump(), **overrides})
        settings = settings.model_copy(update={"mqtt": mqtt})
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lookout` console script."""
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print("lookout: the configuration is not valid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(f"configuration OK (broker {settings.mqtt.host}:{settings.mqtt.port})")
        return 0
    if args.command == "health":
        return _health(settings, args)
    return _run(settings)


def _health(settings: Settings, args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from service.client import RequestTimeoutError, call  # noqa: PLC0415

    try:
        reply = asyncio.run(call(settings, args.user, "health", {}, timeout=args.timeout))
    except RequestTimeoutError as exc:
        print(f"lookout: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(reply, indent=2))
    elif reply.get("type") == "done":
        broker = reply.get("broker", {})
        print(
            f"lookout {reply.get('version')} up {reply.get('uptime_s', 0):.0f} s, "
            f"broker connected={broker.get('connected')} connects={broker.get('connects')}"
        )
    else:
        print(f"lookout: error: {reply.get('error')}", file=sys.stderr)
    return 0 if reply.get("type") == "done" else 1


def _run(settings: Settings) -> int:
    from service.app import main as app_main  # noqa: PLC0415 - keep check-config fast
    from service.bus import BusAuthError  # noqa: PLC0415
    from service.log import configure_logging  # noqa: PLC0415

    configure_logging(settings.log.level, settings.log.format)
    code = 0
    try:
        code = asyncio.run(app_main(settings))
    except* BusAuthError as group:
        print(f"lookout: {group.exceptions[0]}", file=sys.stderr)
        code = EXIT_AUTH
    except* KeyboardInterrupt:
        code = 0
    return code
