"""``scripts/chaos``: every reliability scenario at full length, one line of figures each.

    scripts/chaos                  # all of them, full length (about an hour)
    scripts/chaos --scale ci       # the lengths the test suite uses (a few minutes)
    scripts/chaos api_storm soak   # only these

Exit 0 when every scenario kept its promises, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

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
    return run(args.names or list(SCENARIOS), scale, sys.stdout, args.workdir)


if __name__ == "__main__":
    sys.exit(main())
