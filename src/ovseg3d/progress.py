"""Progress bars for long work (tqdm): rate and ETA on a terminal, periodic lines in logs."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: int | None, desc: str, unit: str = "it") -> tqdm:
    # Off a terminal (CI logs, pipes) print a line every 10 s rather than redrawing.
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr,
                mininterval=0.1 if interactive else 10.0, ascii=not interactive)
