"""Human-readable sizes and durations, shared by the terminal UI and the listing index."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size: int | None) -> str:
    """1536 -> '1.5 KiB'; a table of 100,000 rows calls this 100,000 times."""
    if size is None:
        return "?"
    if size < 1024:
        return f"{size} B"
    exp = min((size.bit_length() - 1) // 10, len(_UNITS) - 1)
    return f"{size / (1 << (10 * exp)):.1f} {_UNITS[exp]}"


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'7d', '12h', '30m', '45s', '2w' or bare seconds ('0') -> seconds; ValueError if not."""
    text = text.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit is not None else text
    value = float(number)  # ValueError for junk
    if value < 0 or value != value:
        raise ValueError(text)
    return value * (unit or 1)
