"""The `ovseg3d` command: one subcommand per stage of the pipeline.

Subcommands register themselves in ``COMMANDS``; a user mistake raises ``UserError`` and is
printed as one line with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ovseg3d import __version__
from ovseg3d.errors import UserError

# name -> (one-line help, function adding arguments, function running the command)
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _info_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _info_run(args: argparse.Namespace) -> int:
    from ovseg3d.envinfo import collect, format_report

    report = collect()
    if args.json:
        import json

        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0 if all(v.get("ok") for v in report.values()) else 1


def _module_command(name: str) -> Command:
    """A subcommand whose arguments and body live in ovseg3d.commands.<name> (imported lazily)."""
    import importlib

    module = importlib.import_module(f"ovseg3d.commands.{name}")
    return module.HELP, module.add_arguments, module.run


COMMANDS: dict[str, Command] = {
    "info": ("report the versions and availability of torch, MinkowskiEngine, open_clip and ROS 2",
             _info_args, _info_run),
    "synth": _module_command("synth"),
    "teachers": _module_command("teachers"),
    "calibrate": _module_command("calibrate"),
    "extract": _module_command("extract"),
    "infer": _module_command("infer"),
    "eval": _module_command("evaluate"),
    "demo": _module_command("demo"),
    "query": _module_command("query"),
    "replay": _module_command("replay"),
    "bench": _module_command("bench"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ovseg3d",
        description="Open-vocabulary 3D semantic and instance segmentation for robots, by 2D-to-3D "
        "distillation. Each subcommand has its own --help.",
    )
    parser.add_argument("--version", action="version", version=f"ovseg3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "_pass_through", False):
        parser.parse_args(argv)  # the usual one-line error for options nobody takes
    args.unknown = unknown
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"ovseg3d {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ovseg3d {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`ovseg3d eval ... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
