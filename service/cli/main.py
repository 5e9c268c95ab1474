"""The `lookout` command line.

``run`` and ``check-config`` work on the local configuration; every other command is
an MQTT client of a running lookout (:mod:`service.cli.requests`), configured from the
same file and the same ``--host``/``--port`` overrides.

Exit codes: 0 fine, 1 an error reply or no answer, 2 bad configuration or arguments,
3 the broker refused the credentials, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from service import __version__
from service.settings import ConfigError, Settings, load_settings

EXIT_CONFIG = 2
EXIT_AUTH = 3
DEFAULT_USER = "cli"


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", "-c", metavar="PATH", help="YAML config file (default: $LOOKOUT_CONFIG)"
    )
    common.add_argument("--host", help="broker host (overrides mqtt.host)")
    common.add_argument("--port", type=int, help="broker port (overrides mqtt.port)")
    return common


def _client(timeout: float) -> argparse.ArgumentParser:
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--user",
        "-u",
        default=os.environ.get("LOOKOUT_USER", DEFAULT_USER),
        help="the caller name requests are made as (default: $LOOKOUT_USER or 'cli')",
    )
    client.add_argument(
        "--timeout", type=float, default=timeout, help=f"seconds to wait (default {timeout:g})"
    )
    client.add_argument("--json", action="store_true", help="print the reply as JSON")
    return client


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookout",
        description="Talk to your cameras over MQTT: LLM chat with tools and VLM camera watches.",
    )
    parser.add_argument("--version", action="version", version=f"lookout {__version__}")
    common = _common()
    quick, slow = _client(30.0), _client(300.0)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="run the worker until SIGTERM or Ctrl-C")
    sub.add_parser("check-config", parents=[common], help="validate the configuration and exit")
    sub.add_parser(
        "health", parents=[common, _client(10.0)], help="ask a running lookout for its health"
    )

    ask = sub.add_parser(
        "ask",
        parents=[common, slow],
        help="ask a question; the answer streams as it comes",
        description="Ask lookout a question. The answer goes to stdout as it streams; tool "
        "calls, reasoning and the conversation id go to stderr.",
    )
    ask.add_argument("text", nargs="+", help="the question ('-' reads it from stdin)")
    ask.add_argument("--conversation", metavar="ID", help="continue this conversation")
    ask.add_argument("--show-reasoning", action="store_true", help="show the model's reasoning")
    ask.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    ask.add_argument("--max-tool-iterations", type=int, metavar="N", help="1-10 (default 5)")
    thinking = ask.add_mutually_exclusive_group()
    thinking.add_argument("--thinking", dest="thinking", action="store_true", default=None)
    thinking.add_argument("--no-thinking", dest="thinking", action="store_false")

    watch = sub.add_parser("watch", help="start, list or cancel camera watches")
    wsub = watch.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = wsub.add_parser(
        "start", parents=[common, quick], help="watch a camera until something happens"
    )
    start.add_argument("--camera", required=True, help="camera id")
    start.add_argument("--condition", required=True, help="what to wait for, in plain words")
    start.add_argument("--minutes", type=int, help="give up after this many minutes")
    start.add_argument("--labels", nargs="+", metavar="LABEL", help="object classes that trigger")
    start.add_argument("--zones", nargs="+", metavar="ZONE", help="only detections in these zones")
    wsub.add_parser("list", parents=[common, quick], help="list your watches")
    cancel = wsub.add_parser("cancel", parents=[common, quick], help="cancel a watch")
    cancel.add_argument("job_id", metavar="JOB", help="the watch's job id")

    tools = sub.add_parser(
        "tools", parents=[common, quick], help="list lookout's tools, or run one"
    )
    tools.add_argument("--run", metavar="NAME", help="run this tool with your rights")
    tools.add_argument("--args", metavar="JSON", default="{}", help="the tool's arguments")

    from service.cli.grab import add_parser as add_grab  # noqa: PLC0415 - cheap, no cv2

    add_grab(sub, common)

    events = sub.add_parser("events", parents=[common, quick], help="recent stored events")
    events.add_argument("--camera", help="only this camera")
    events.add_argument("--label", help="only this object class (person, car, …)")
    events.add_argument("--limit", type=int, default=20, help="how many (1-100, default 20)")
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
    if args.command == "run":
        return _run(settings)
    if args.command == "grab":
        from service.cli import grab as grab_command  # noqa: PLC0415
        from service.log import configure_logging  # noqa: PLC0415

        configure_logging(settings.log.level, settings.log.format)
        return grab_command.run(settings, args)
    from service.cli import requests as cli_requests  # noqa: PLC0415 - keep `run` start-up lean
    from service.log import configure_logging  # noqa: PLC0415

    # stdout carries the answer (`--json` feeds jq); the bus's own log lines go to
    # stderr, and only when something is wrong.
    configure_logging("warning", settings.log.format)
    return cli_requests.dispatch(settings, args)


def _run(settings: Settings) -> int:
    from service.app import main as app_main  # noqa: PLC0415 - keep check-config fast
    from service.log import configure_logging  # noqa: PLC0415
    from service.mqtt import BusAuthError  # noqa: PLC0415

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
