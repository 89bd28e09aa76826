"""``scripts/chaos``: every reliability scenario at full length, one line of figures each.

    scripts/chaos                  # all of them, full length (about an hour)
    scripts/chaos --scale ci       # the lengths the test suite uses (a few minutes)
    scripts/chaos api_storm soak   # only these

Exit 0 when every scenario kept its promises, 1 otherwise.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from tests.reliability.scenarios import CI, FULL, SCENARIOS, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument("--scale", choices=("full", "ci"), default="full")
    parser.add_argument("--workdir", type=Path, help="keep logs here (default: a temporary dir)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    scale = FULL if args.scale == "full" else CI
    # Stopped by SIGTERM or Ctrl-C (even when started in the background, where
    # SIGINT is ignored), the run unwinds and stops the processes it started.
    signal.signal(signal.SIGTERM, _unwind)
    signal.signal(signal.SIGINT, _unwind)
    return run(args.names or list(SCENARIOS), scale, sys.stdout, args.workdir)


def _unwind(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
