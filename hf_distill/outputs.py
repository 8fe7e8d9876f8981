"""The output folder of a run: what may be written there, and which checkpoint in it a run can resume from.

[`check_output_dir`] runs before anything is written: it never lets a run write into a teacher's folder (or a folder
inside it), and refuses a non-empty folder that holds something other than this tool's own outputs unless the user
says to overwrite (`overwrite_output_dir`). A folder holding only an earlier run's outputs (its checkpoints, the
student's files) is accepted, so that resuming keeps working. [`last_complete_checkpoint`] is the checkpoint to resume
from: the newest one whose saving finished.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from .hub import CARD_FILES, MODEL_FILES, PLOT_FILES, TOKENIZER_FILES
from .log import get_logger

__all__ = ["OVERWRITE_FLAG", "RUN_FILES", "check_output_dir", "last_complete_checkpoint", "refuse_teacher_folder"]

logger = get_logger(__name__)

# The flag that lets a run write into a folder holding other things (transformers 5 removed its own).
OVERWRITE_FLAG = "overwrite_output_dir"
# What a run writes at the top of its output folder besides the student's files, which hub.py names.
RUN_FILES = frozenset(
    {
        *MODEL_FILES,
        *TOKENIZER_FILES,
        *CARD_FILES,
        *PLOT_FILES,
        "training_args.bin",
        "trainer_state.json",
        "distillation_projections.safetensors",
        "all_results.json",
        "train_results.json",
        "eval_results.json",
        "test_results.json",
        "runs",  # logging_dir of tensorboard
    }
)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
_TRAINER_STATE = "trainer_state.json"
_MODEL_MARKERS = ("config.json", "model.safetensors", "model.safetensors.index.json", "adapter_config.json")


def check_output_dir(
    path: str | os.PathLike,
    *,
    protected: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False,
    expected_files: Iterable[str] = (),
) -> None:
    """Refuses an output folder that a run must not write into; call it before anything is written.

    - Never a teacher's folder, nor a folder inside one (real paths are compared, so symlinks do not hide it), even
      with `overwrite`.
    - A missing or empty folder is fine.
    - A non-empty folder is fine when it holds only what a run of this tool writes (the student's files, `checkpoint-N`
      folders, `training_args.bin`, results files, `runs/`, plus `expected_files`) and, when it holds a model, that
      model is one this tool wrote (its `config.json` records `distillation_teacher`, or the folder holds
      `distillation_metrics.json`, or a `training_args.bin` of a `DistillationConfig`). Anything else is refused
      unless `overwrite`.

    Args:
        path: the output folder.
        protected: folders that must never be written to: the teachers' (entries that are not local folders, such as
            Hub ids, are skipped).
        overwrite (`bool`): write into a non-empty folder whatever it holds (the `overwrite_output_dir` flag).
        expected_files: further top-level names this run writes (e.g. its own plots).

    Raises:
        `ValueError`: naming the folder, what it holds, and the flag that allows it.
    """
    folder = Path(path)
    refuse_teacher_folder(folder, protected)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"output_dir {str(folder)!r} is a file, not a folder: give a folder (--output_dir)")
    entries = sorted(os.listdir(folder))
    if not entries:
        return
    if overwrite:
        logger.warning(f"Writing into {folder}, which already holds {_listing(folder, entries)} ({OVERWRITE_FLAG})")
        return
    known = RUN_FILES | set(expected_files)
    foreign = [name for name in entries if not _is_run_output(folder, name, known)]
    if foreign:
        raise ValueError(
            f"output_dir {str(folder)!r} already holds {_listing(folder, foreign)}, which this run did not write: "
            f"its files could be overwritten. Give an empty or new folder (--output_dir), or pass --{OVERWRITE_FLAG} "
            "to write into it anyway."
        )
    if any((folder / name).exists() for name in _MODEL_MARKERS) and not _written_by_hf_distill(folder):
        raise ValueError(
            f"output_dir {str(folder)!r} already holds a model that hf_distill did not write "
            f"({_listing(folder, [n for n in entries if (folder / n).is_file()])}): the student would replace it. "
            f"Give an empty or new folder (--output_dir), or pass --{OVERWRITE_FLAG} to replace it."
        )


def refuse_teacher_folder(path: str | os.PathLike, protected: Iterable[str | os.PathLike | None]) -> None:
    """Refuses `path` when it is one of the `protected` (teacher) folders or inside one, comparing real paths (a
    symlink does not hide it); what [`check_output_dir`] does first, whatever `overwrite` says.

    Raises:
        `ValueError`: naming both folders.
    """
    folder = Path(path)
    real = Path(os.path.realpath(folder))
    for teacher in protected:
        if teacher is None or not os.path.isdir(teacher):
            continue
        teacher_real = Path(os.path.realpath(teacher))
        if real == teacher_real or teacher_real in real.parents:
            where = "is" if real == teacher_real else "is inside"
            raise ValueError(
                f"output_dir {str(folder)!r} {where} the teacher's folder {str(teacher)!r} ({teacher_real}): the "
                "student would overwrite the teacher's files. Give another output_dir (--output_dir), outside the "
                f"teacher's folder; {OVERWRITE_FLAG} does not allow this."
            )


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-N` folder of `output_dir` whose saving finished (transformers writes
    `trainer_state.json` last); `None` when there is none. What a run resumes from, in place of transformers'
    `get_last_checkpoint`, which also returns a checkpoint that an interruption left half-written."""
    try:
        names = os.listdir(output_dir)
    except OSError:
        return None
    steps = sorted(
        (int(match.group(1)), name)
        for name in names
        if (match := _CHECKPOINT.match(name)) and os.path.isfile(os.path.join(output_dir, name, _TRAINER_STATE))
    )
    return os.path.join(str(output_dir), steps[-1][1]) if steps else None


def _is_run_output(folder: Path, name: str, known: set[str] | frozenset[str]) -> bool:
    path = folder / name
    if _CHECKPOINT.match(name):
        return path.is_dir()
    if _SHARD.match(name):
        return path.is_file()
    if name == "runs":
        return path.is_dir()
    return name in known and path.is_file() and not path.is_symlink()


def _written_by_hf_distill(folder: Path) -> bool:
    if (folder / "distillation_metrics.json").is_file():
        return True
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if isinstance(config, dict) and ("distillation_teacher" in config or "distillation_teacher_layers" in config):
            return True
    except (OSError, ValueError):
        pass
    args_files = [folder / "training_args.bin", *sorted(folder.glob("checkpoint-*/training_args.bin"))]
    return any(_is_distillation_args(path) for path in args_files)


def _is_distillation_args(path: Path) -> bool:
    """Whether a `training_args.bin` pickles a `DistillationConfig`, read as bytes (never unpickled: loading a pickle
    runs code). torch stores the pickle uncompressed, so the class name appears as written."""
    try:
        return b"DistillationConfig" in path.read_bytes()
    except OSError:
        return False


def _listing(folder: Path, names: list[str], limit: int = 6) -> str:
    shown = [f"{name}/" if (folder / name).is_dir() else name for name in names[:limit]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(shown) + more
