"""Number and date formatting shared by the report's Python code and its jinja filters.

Every function returns plain text; jinja escapes it like any other string.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, TypeGuard

NO_VALUE = "\u2013"  # en dash shown where there is no number
RANGE = "\u2013"  # between the two ends of an interval


def finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def num(value: Any, digits: int = 1) -> str:
    """Fixed-point with thousands separators; an en dash when there is no number."""
    return f"{value:,.{digits}f}" if finite(value) else NO_VALUE


def sig(value: Any, digits: int = 3) -> str:
    """Significant digits, for values that span orders of magnitude (e.g. max abs diff)."""
    return f"{value:.{digits}g}" if finite(value) else NO_VALUE


def pct(value: Any, digits: int = 2) -> str:
    """A fraction shown as a percentage."""
    return f"{value * 100:.{digits}f}%" if finite(value) else NO_VALUE


def interval(low: Any, high: Any, digits: int = 2) -> str:
    """`[low-high] (an en dash between)`, or an empty string when either end is missing."""
    if not (finite(low) and finite(high)):
        return ""
    return f"[{num(low, digits)}{RANGE}{num(high, digits)}]"


def times(value: Any) -> str:
    """A ratio: `1.32x`."""
    return f"{value:.2f}x" if finite(value) else NO_VALUE


def ratio(value: Any, low: Any, high: Any, of: str = "") -> str:
    """A ratio and its interval: `1.32x [1.25-1.40]`, or `1.32x Y [1.25-1.40]` with `of`."""
    return " ".join(part for part in (times(value), of, interval(low, high, 2)) if part)


def sortkey(value: Any) -> str:
    return repr(float(value)) if finite(value) else ""


def size(value: Any) -> str:
    if not finite(value):
        return NO_VALUE
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return NO_VALUE


def when(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return NO_VALUE
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return value
    zone = stamp.tzname() or ""
    return stamp.strftime("%Y-%m-%d %H:%M:%S") + (f" {zone}" if zone else "")
