"""How the report writes numbers: percentages, scores, counts and durations, as plain text."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from noiseal_ray.report.limits import TEXT_CHARS

DASH = "–"  # what a missing number reads as


def pct(x: float | None, *, digits: int = 1) -> str:
    """A fraction as a percentage, ``0.1234`` -> ``"12.3%"``; None/NaN -> the dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    return f"{100 * x:.{digits}f}%"


def num(x: Any, *, digits: int = 3) -> str:
    """A score with ``digits`` decimals; an integer count with thousands separators; None/NaN -> dash;
    anything that is not a number, as its text."""
    if x is None:
        return DASH
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(f):
        return DASH
    if f.is_integer() and abs(f) >= 1 and isinstance(x, (int, np.integer)):
        return f"{int(f):,}"
    return f"{f:.{digits}f}"


def count(x: int | np.integer) -> str:
    """An integer count with thousands separators: ``1234`` -> ``"1,234"``."""
    return f"{int(x):,}"


def duration(s: float | None) -> str:
    """Seconds as ``"12.5 s"``, ``"3 min 4 s"`` or ``"2 h 5 min"``; None -> the dash."""
    if s is None:
        return DASH
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def short_text(t: Any) -> str:
    """A sample's text cut to TEXT_CHARS characters (an ellipsis marks the cut); None -> ""."""
    t = "" if t is None else str(t)
    return t if len(t) <= TEXT_CHARS else t[: TEXT_CHARS - 1] + "…"


def is_missing(x: Any) -> bool:
    """True for None and float NaN (how pandas hands back a missing cell)."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def text(x: Any) -> str:
    """Any value from the run as text; None -> ""."""
    return "" if x is None else str(x)
