"""`ovseg3d-train`: offline distillation of the 3D student from fused 2D teacher features."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ovseg3d-train",
        description="Distil the MinkowskiEngine 3D student from fused 2D vision-language features "
        "(OpenScene-format targets). Configs live in training/configs/; any config key can be "
        "overridden as key=value. Run several processes with torchrun for DistributedDataParallel.",
    )
    parser.add_argument("--config", required=True, help="training config YAML (training/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("ovseg3d-train: error: the distillation trainer is not implemented yet (tracked in the "
          "student and training issue); nothing was run.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
