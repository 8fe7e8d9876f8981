"""How a student names the teacher it was built from, in its config, its card and its metrics: a Hub id as it is, a
local folder by its base name only (a published model must not reveal the layout of the user's file system)."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id

__all__ = ["is_local_teacher", "teacher_reference"]


def teacher_reference(name_or_path: str | os.PathLike | None) -> str | None:
    """
    How a student's config names its teacher: a Hub id as it is; a local folder by its base name only, which is what
    the model card shows (a published model must not reveal the layout of the user's file system).
    """
    if not name_or_path:
        return None
    name = str(name_or_path)
    return Path(os.path.abspath(os.path.expanduser(name))).name if is_local_teacher(name) else name


def is_local_teacher(name_or_path: str | os.PathLike) -> bool:
    """Whether a teacher was named by a local folder (not a Hub id): its [`teacher_reference`] is then a folder name,
    which must not be taken for a Hub id (a card's `base_model`)."""
    name = str(name_or_path)
    if os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name):
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False
