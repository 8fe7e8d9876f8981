"""The output folder of a run: what may be written there, how it is written, and which checkpoint in it a run can
resume from.

[`check_output_dir`] runs before anything is written: it never lets a run write into a teacher's folder (or a folder
inside it), and refuses a non-empty folder that holds something other than this tool's own outputs unless the user
says to overwrite (`overwrite_output_dir`). A folder holding only an earlier run's outputs (its checkpoints, the
student's files) is accepted, so that resuming keeps working. [`last_complete_checkpoint`] is the checkpoint to resume
from: the newest one whose saving finished.

[`staged_folder`] is how a build that must never be seen half-done (an export, `hf-distill compress`, the augmented
transfer set) writes: into a staging folder beside its target, moved into place by renames once complete. A failure
or Ctrl-C removes the staging folder; one left by a killed process is removed by the next build in that place
([`remove_stale_staging`]).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

from .log import get_logger
from .model_files import CARD_FILES, MODEL_FILES, PLOT_FILES, TOKENIZER_FILES

__all__ = [
    "OVERWRITE_FLAG",
    "RUN_FILES",
    "check_output_dir",
    "last_complete_checkpoint",
    "refuse_model_folder",
    "refuse_teacher_folder",
    "remove_stale_staging",
    "staged_folder",
    "staging_path",
]

logger = get_logger(__name__)

# The flag that lets a run write into a folder holding other things (transformers 5 removed its own).
OVERWRITE_FLAG = "overwrite_output_dir"
# What a run writes at the top of its output folder besides the student's files, which model_files.py names.
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
    refuse_model_folder(path, protected, role="teacher")


def refuse_model_folder(
    path: str | os.PathLike, protected: Iterable[str | os.PathLike | None], role: str = "teacher"
) -> None:
    """Refuses `path` when it is one of the `protected` folders of a model (`role`: "teacher", "student") or inside
    one, comparing real paths (a symlink does not hide it). Entries that are not local folders (Hub ids) are skipped.

    Raises:
        `ValueError`: naming both folders and the folder's role.
    """
    folder = Path(path)
    real = Path(os.path.realpath(folder))
    for model in protected:
        if model is None or not os.path.isdir(model):
            continue
        model_real = Path(os.path.realpath(model))
        if real == model_real or model_real in real.parents:
            where = "is" if real == model_real else "is inside"
            raise ValueError(
                f"output_dir {str(folder)!r} {where} the {role}'s folder {str(model)!r} ({model_real}): writing there "
                f"could overwrite the {role}'s files. Give another output_dir (--output_dir), outside the {role}'s "
                f"folder; {OVERWRITE_FLAG} does not allow this."
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


# ---- writing a folder that is never seen half-done ------------------------------------------------------------------

# Staging folders are named `.hf-distill-partial-<host>-<pid>-<random>`: the host and process say whether the process
# that made one is still running (a folder left by a killed process is removed by the next build in the same place).
STAGING_PREFIX = ".hf-distill-partial-"


def remove_stale_staging(folder: str | os.PathLike) -> list[str]:
    """Removes the staging folders in `folder` that a process of this machine left when it was killed (SIGKILL, a
    power cut): those whose process no longer runs. Returns their names. Another machine's are left alone."""
    folder = Path(folder)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    host = socket.gethostname()
    for name in sorted(names):
        if not name.startswith(STAGING_PREFIX):
            continue
        parts = name[len(STAGING_PREFIX) :].rsplit("-", 2)  # host (which may hold dashes), pid, random
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit() or _process_runs(int(parts[1])):
            continue
        shutil.rmtree(folder / name, ignore_errors=True)
        removed.append(name)
    if removed:
        logger.info(f"Removed {len(removed)} unfinished build folder(s) that an interrupted run left in {folder}")
    return removed


def staging_path(folder: str | os.PathLike) -> Path:
    """A new staging folder's path in `folder`, named for this process (see [`remove_stale_staging`]); not created."""
    return Path(folder) / f"{STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def staged_folder(
    target: str | os.PathLike, *, replace: bool | Collection[str] = False, what: str = "output folder"
) -> Iterator[Path]:
    """Yields an empty staging folder; when the block ends without an error, its contents become `target`'s.

    The staging folder is made in `target` when that exists (else beside it), so that the final moves are renames on
    one file system: a new `target` appears whole at once (one rename), and an existing one gets each new entry by
    one rename. An error or Ctrl-C in the block removes the staging folder and leaves `target` as it was. Staging
    folders that killed processes left in the same place are removed first ([`remove_stale_staging`]).

    Args:
        target: the folder to write.
        replace: which entries of an existing `target` may be replaced: `True` for any, or a collection of names.
            Any other entry of the same name as a staged one is refused (a `ValueError` naming it, raised before
            anything in `target` is touched). Replaced entries are removed once the new ones are in place.
        what: what `target` is, for the error message.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{what} {str(target)!r} is a file, not a folder: give a folder")
    root = target if target.is_dir() else target.parent
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(root)
    stage = staging_path(root)
    stage.mkdir()
    try:
        yield stage
        _publish(stage, target, replace, what)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _publish(stage: Path, target: Path, replace: bool | Collection[str], what: str) -> None:
    names = sorted(os.listdir(stage))
    if not target.exists():
        # The whole folder at once: the staging folder becomes the target (a stale staging folder is never inside it).
        os.rename(stage, target)
        stage.mkdir()  # for the caller's clean-up
        return
    clashes = [name for name in names if os.path.lexists(target / name)]
    refused = [name for name in clashes if not (replace is True or (replace and name in replace))]
    if refused:
        raise ValueError(
            f"{what} {str(target)!r} already holds {_listing(target, refused)}, which this would replace: nothing was "
            f"written. Give an empty or new folder, or move those files away (or pass --{OVERWRITE_FLAG})"
        )
    trash = stage / ".replaced"
    trash.mkdir()
    for name in names:
        if name in clashes:
            os.rename(target / name, trash / name)
        os.rename(stage / name, target / name)
