"""Entry point of the ``medfool`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import cast

from medfool import __version__
from medfool.cli import analyze, attack, audit, commands, defend, demo, describe, export, generate, poison, wsi
from medfool.cli import range as range_cmd
from medfool.cli.common import Parser
from medfool.errors import MedfoolError

__all__ = ["EPILOG", "build_parser", "main"]

EPILOG = """\
Pixel space is [0, 1]; epsilons are written as k/255. Data is looked up in --data-dir,
then $MEDFOOL_DATA_DIR, then ~/.cache/medfool (official MedMNIST files are downloaded there).
Run 'medfool COMMAND --help' for the options of a command."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="medfool", description="Red-team medical image classifiers.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"medfool {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    # subcommands are Parsers too (argparse makes them of the parent's class)
    sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]",
               parser.add_subparsers(dest="command", metavar="COMMAND"))
    sub.required = True
    demo.register(sub)
    commands.register(sub)
    attack.register(sub)
    analyze.register(sub)
    audit.register(sub)
    export.register(sub)
    range_cmd.register(sub)
    wsi.register(sub)
    generate.register(sub)
    describe.register(sub)
    poison.register(sub)
    defend.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad option (one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    try:
        return int(args.func(args))
    except MedfoolError as exc:
        print(f"medfool: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medfool: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
