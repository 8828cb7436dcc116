"""`ovseg3d teachers`: the registered 2D teachers and their options."""

from __future__ import annotations

import argparse

HELP = "list the available 2D teachers"


def add_arguments(p: argparse.ArgumentParser) -> None:
    del p  # no options


def run(args: argparse.Namespace) -> int:
    from ovseg3d.teachers.base import available_teachers

    for name, desc in available_teachers().items():
        print(f"{name:<14} {desc}")
    return 0
