"""`ovseg3d bench`: run the benchmark scripts (speed, memory and method ablations, side by side)."""

from __future__ import annotations

import argparse

HELP = "run benchmarks that print ratios measured side by side in one run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", help="which benchmarks (default: speed scenes teachers); see benchmarks/")
    p.add_argument("--quick", action="store_true", help="smaller sizes where the benchmark supports it")
    p.add_argument("--args", default="", metavar="'ARGS'",
                   help="options passed to the one benchmark named, e.g. distill --args='--input color --seed 1'")
    p.epilog = ("Other options after one benchmark's name go to it: `ovseg3d bench node --minutes 60`; "
                "`ovseg3d bench NAME --args=--help` lists them.")
    p.set_defaults(_pass_through=True)


def run(args: argparse.Namespace) -> int:
    import shlex
    import subprocess
    import sys

    from ovseg3d.errors import UserError
    from ovseg3d.paths import benchmarks_dir

    folder = benchmarks_dir()
    available = sorted(p.stem.removeprefix("bench_") for p in folder.glob("bench_*.py"))
    names = args.names or ["speed", "scenes", "teachers"]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UserError(f"unknown benchmark {', '.join(unknown)}; available: {', '.join(available)}")
    extra = shlex.split(args.args) + list(getattr(args, "unknown", []))
    if extra and len(names) != 1:
        what = "--args goes" if args.args else f"options for a benchmark ({' '.join(extra)}) go"
        raise UserError(f"{what} to one benchmark; {len(names)} were named")
    quick_ok = {"speed", "scenes", "student", "node", "map"}
    for name in names:
        cmd = [sys.executable, str(folder / f"bench_{name}.py")]
        if args.quick and name in quick_ok:
            cmd.append("--quick")
        cmd += extra
        print(f"### ovseg3d bench {name}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise UserError(f"benchmark {name} failed (output above)")
    return 0
