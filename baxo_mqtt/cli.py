"""The ``baxo-mqtt`` command: parse arguments, load settings, hand off.

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from baxo_mqtt import __version__
from baxo_mqtt.errors import BaxoError, ConfigError

if TYPE_CHECKING:
    from baxo_mqtt.settings import Settings

EXIT_RUNTIME, EXIT_CONFIG = 1, 2


def report_config_error(error: ConfigError) -> int:
    """Print every problem of ``error``, one line each, and return the exit code for it.

    The one place configuration errors reach the user, whether the settings, the
    state directory or a check at start found them.
    """
    for problem in error.problems:
        print(f"config error: {problem}", file=sys.stderr)
    return EXIT_CONFIG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="baxo-mqtt", description="Bridge BAXO Connect measuring instruments to MQTT."
    )
    parser.add_argument("--version", action="version", version=f"baxo-mqtt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            help="TOML file (default: $BAXO_MQTT_CONFIG, else /etc/baxo-mqtt/config.toml)",
        )
        return sub

    with_config("run", "run the bridge daemon")
    with_config("check-config", "validate the configuration and print it (secrets as ***)")
    discover = with_config("discover", "list contracts, devices and their current tag values")
    discover.add_argument("--json", action="store_true", help="JSON instead of a table")

    history = with_config("history", "export history, following every page")
    history.add_argument("--contract", required=True, metavar="ID")
    history.add_argument(
        "--device",
        required=True,
        action="append",
        metavar="ID",
        help="device id (repeat for several)",
    )
    history.add_argument("--start", required=True, metavar="T", help="ISO 8601; no offset = UTC")
    history.add_argument("--end", required=True, metavar="T", help="ISO 8601; no offset = UTC")
    history.add_argument("--tag", action="append", metavar="REF", help="tag reference (repeatable)")
    history.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    history.add_argument("-o", "--output", metavar="FILE", help="default: stdout")

    write = with_config("write", "write one tag value")
    write.add_argument("--contract", required=True, metavar="ID")
    write.add_argument("--device", required=True, metavar="ID")
    write.add_argument("--tag", required=True, metavar="REF")
    write.add_argument("--value", required=True, metavar="V")
    write.add_argument(
        "--force",
        action="store_true",
        help="write even though the tag is not in write.allow (write.deny and "
        "write.enabled still hold)",
    )

    sim = commands.add_parser(
        "simulator",
        help="run the built-in BAXO API simulator",
        description="Serve a fake BAXO Connect API over HTTP at /k1.",
    )
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8080)
    sim.add_argument("--contracts", type=int, default=1)
    sim.add_argument("--devices", type=int, default=5, help="devices per contract")
    sim.add_argument("--tags", type=int, default=4, help="tags per device")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument(
        "--log-period",
        type=float,
        default=None,
        metavar="S",
        help="seconds between two samples of a device's tags (default 60; 0: every read "
        "is a new sample)",
    )
    sim.add_argument(
        "--transmit-period",
        type=float,
        default=None,
        metavar="S",
        help="seconds between two transmissions of a device (default: the log period)",
    )
    sim.add_argument(
        "--value-period",
        type=float,
        default=None,
        metavar="S",
        help="sets both periods at once (0: every read changes)",
    )
    sim.add_argument(
        "--latency", type=float, default=0.0, metavar="S", help="added latency per API request"
    )
    sim.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of API requests answered HTTP 500",
    )
    sim.add_argument(
        "--staggered",
        action="store_true",
        help="each device samples and transmits at its own moment in the period, as real "
        "loggers on their own schedules do",
    )
    sim.add_argument("--page-size", type=int, default=10_000, help="history rows per page")
    sim.add_argument("--username", default="demo@example.com")
    sim.add_argument("--password", default="demo")

    demo = commands.add_parser(
        "demo", help="simulator + bridge together, printing what is published"
    )
    demo.add_argument(
        "--broker",
        default="auto",
        metavar="WHICH",
        help="auto (default: localhost:1883 if it answers, else mosquitto if installed, else "
        "amqtt in-process), mosquitto, amqtt, or HOST:PORT of a broker to use",
    )
    demo.add_argument("--interval", type=float, default=2.0, metavar="S", help="poll interval")
    demo.add_argument("--metrics-port", type=int, default=9877)
    return parser


def _stop_before_start(signum: int, frame: object) -> None:
    """SIGTERM or SIGINT before the daemon is up: nothing to undo yet, so exit 0.

    At once, not by raising SystemExit: an exception raised in a signal handler
    surfaces wherever the main thread is, during start-up mostly inside an
    import, where it can be swallowed (in a weakref callback it is only printed,
    and the process carries on as if never asked to stop) or turned into another
    error (pydantic-core building a validator makes it a SchemaError: exit 1).
    Nothing is connected or published yet, and the state directory survives a
    stop at any moment (README "State directory").
    """
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command: str = args.command
    if command == "run":
        # From the first moment on, a stop request is a clean exit, not a death by
        # signal; once the bridge exists, its own handler takes over (bridge/app.py).
        signal.signal(signal.SIGTERM, _stop_before_start)
        signal.signal(signal.SIGINT, _stop_before_start)
    if command == "simulator":
        from baxo_mqtt.simulator.http import serve

        return serve(
            host=args.host,
            port=args.port,
            contracts=args.contracts,
            devices=args.devices,
            tags=args.tags,
            seed=args.seed,
            value_period_s=args.value_period,
            log_period_s=args.log_period,
            transmit_period_s=args.transmit_period,
            latency_s=args.latency,
            error_rate=args.error_rate,
            username=args.username,
            password=args.password,
            page_size=args.page_size,
            staggered=args.staggered,
        )
    if command == "demo":
        from baxo_mqtt.demo import run_demo

        return run_demo(
            broker=args.broker, interval_s=args.interval, metrics_port=args.metrics_port
        )
    if command == "check-config":
        return check_config_command(args.config)
    return _with_settings(command, args)


def check_config_command(cli_path: str | None, environ: Mapping[str, str] | None = None) -> int:
    """``baxo-mqtt check-config``: print the effective configuration, or every problem.

    Returns the exit code: 0 when the configuration is valid, 2 when it is not.
    """
    from baxo_mqtt.settings import load_settings, render_effective, resolve_config_path

    environ = os.environ if environ is None else environ
    try:
        settings = load_settings(cli_path, environ)
    except ConfigError as error:
        return report_config_error(error)
    sys.stdout.write(render_effective(settings))
    path = resolve_config_path(cli_path, environ)
    print(f"configuration OK ({path if path is not None else 'environment only'})", file=sys.stderr)
    return 0


def _with_settings(command: str, args: argparse.Namespace) -> int:
    from baxo_mqtt.logs import configure_logging
    from baxo_mqtt.settings import load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        return report_config_error(error)
    configure_logging(
        settings.log.level, settings.log.format, settings.secret_values(), stream=sys.stderr
    )
    if command == "run":
        from baxo_mqtt.bridge.app import run

        try:
            return run(settings)
        except ConfigError as error:  # found at start, such as a state directory in use
            return report_config_error(error)

    try:
        return _api_tool(command, args, settings)
    except BaxoError as error:
        print(f"baxo-mqtt {command}: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_RUNTIME


def _api_tool(command: str, args: argparse.Namespace, settings: Settings) -> int:
    """``discover``, ``history`` and ``write``: one client, one job, an exit code."""
    from baxo_mqtt.baxo.client import BaxoClient

    with BaxoClient(settings.baxo) as client:
        if command == "discover":
            from baxo_mqtt.baxo.inventory import collect_inventory, render_json, render_table

            inventory = collect_inventory(client, settings.poll.batch_size)
            sys.stdout.write(render_json(inventory) if args.json else render_table(inventory))
            return 0
        if command == "history":
            from baxo_mqtt.baxo.history import run_history_command

            try:
                return run_history_command(
                    client,
                    args.contract,
                    args.device,
                    args.start,
                    args.end,
                    args.tag,
                    args.format,
                    args.output,
                )
            except ValueError as error:
                print(f"baxo-mqtt history: {error}", file=sys.stderr)
                return EXIT_CONFIG
        from baxo_mqtt.baxo.tag_write import run_write_command
        from baxo_mqtt.bridge.commands import WriteRules, value_rule_for
        from baxo_mqtt.settings import tag_metadata_from

        rules = WriteRules(
            settings.write.enabled, tuple(settings.write.allow), tuple(settings.write.deny)
        )
        meta = tag_metadata_from(settings).for_tag(args.tag)
        value_rule = value_rule_for(meta.type, meta.min, meta.max)
        return run_write_command(
            client, rules, args.contract, args.device, args.tag, args.value, args.force, value_rule
        )
