"""Plain-text tables of semantic scores, compared against a baseline row."""

from __future__ import annotations

from ovseg3d.eval.semantic import SemanticScores


def miou_table(rows: dict[str, SemanticScores], baseline: str, header: str = "method") -> str:
    """One line per method: mIoU, mAcc (percent) and the mIoU ratio to ``baseline``."""
    width = max(len(header), *(len(k) for k in rows)) + 2
    base = rows[baseline].miou
    lines = [f"{header:<{width}}{'mIoU':>7}{'mAcc':>7}{'vs ' + baseline[:12]:>16}"]
    for key, s in rows.items():
        lines.append(f"{key:<{width}}{s.miou * 100:>7.1f}{s.macc * 100:>7.1f}{s.miou / base:>16.2f}")
    return "\n".join(lines)
