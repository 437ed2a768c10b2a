"""The `fuelswitch` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fuelswitch", description="fuel-card authorization and clearing host")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the demonstration")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from switch.core_demo import run_core_demo

        return run_core_demo()
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
