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


_SIZE_UNITS = {
    "": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
    "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1 << 10, "mib": 1 << 20,
    "gib": 1 << 30, "tib": 1 << 40,
}  # fmt: skip


def parse_size(text: str) -> int:
    """'16GiB', '512 MiB', '2GB' or bare bytes -> bytes; ValueError if not one."""
    raw = text.strip().lower()
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
    unit = raw[len(number) :].strip()
    if unit not in _SIZE_UNITS or not number:
        raise ValueError(f"'{text}' is not a size (e.g. 512MiB, 16GiB).")
    value = float(number)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"'{text}' is not a positive size.")
    return int(value * _SIZE_UNITS[unit])
