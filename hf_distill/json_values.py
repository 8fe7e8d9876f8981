"""Reading values back from JSON (the metrics file, the distillation settings), where a field may be missing, null or
of another type than the code that wrote it meant."""

from __future__ import annotations

from typing import Any

__all__ = ["is_number"]


def is_number(value: Any) -> bool:
    """Whether `value` is an int or a float, and not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
