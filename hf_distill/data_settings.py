"""What the tasks and the input-column detection read of the shared data flags: [`DataSettings`], the fields of
[`hf_distill.data.DataArguments`] that they use.

The tasks name this protocol rather than `DataArguments` itself because `DataArguments` checks its `task` against the
task registry when it is made: the data flags depend on the tasks, and the tasks on these few fields only.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["DataSettings"]


class DataSettings(Protocol):
    """The data flags a task reads; [`hf_distill.data.DataArguments`] has them all (same names, same types)."""

    text_column: str | None
    text_pair_column: str | None
    max_length: int
    split_seed: int
    preprocessing_num_workers: int | None
