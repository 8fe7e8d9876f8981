"""Push a distilled student folder to the Hugging Face Hub: the inference files only, in one commit, with a model card.

A training output folder holds more than the model: hidden-state projections, optimizer and scheduler states, RNG
states, `checkpoint-*` folders. [`push_student`] uploads an allow-list ([`ALLOW_PATTERNS`]) and never the training
leftovers ([`IGNORE_PATTERNS`]); [`files_to_push`] lists what would go up without touching the network.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import warnings
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import filter_repo_objects

from .model_card import build_model_card

__all__ = ["ALLOW_PATTERNS", "IGNORE_PATTERNS", "files_to_push", "push_student"]

logger = logging.getLogger(__name__)

# Files of a student that inference needs, matched against paths relative to the folder (fnmatch, case-sensitive).
ALLOW_PATTERNS = [
    "config.json",
    "generation_config.json",
    "model*.safetensors",
    "model.safetensors.index.json",
    "adapter_config.json",  # a peft student saved as its adapter
    "adapter_model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "*.model",  # sentencepiece
    "README.md",
    "distillation_metrics.json",
    "*.png",
]
# Never uploaded, even when an allow pattern matches: training state, and anything in a sub-folder (`checkpoint-*/`,
# `runs/`, ...), since `*` also matches `/` in these patterns.
IGNORE_PATTERNS = [
    "*/*",
    "checkpoint-*/*",
    "distillation_projections.safetensors",
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "trainer_state.json",
]

_COMMIT_OID = re.compile(r"^[0-9a-f]{40}$")
_AUTH_HINT = "authentication failed: check HF_TOKEN or `hf auth login`"


def files_to_push(folder: str | os.PathLike) -> list[str]:
    """The files of `folder` that [`push_student`] uploads (paths relative to the folder, sorted)."""
    root = Path(folder)
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return list(filter_repo_objects(names, allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS))


def push_student(
    folder: str,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    create_pr: bool = False,
) -> str:
    """
    Upload a saved student to a Hub model repo in one commit and return the commit URL.

    The folder is checked first (`config.json` and safetensors weights). Only the files of [`files_to_push`] are
    uploaded. When the folder has no `README.md`, a model card is generated with [`build_model_card`] and written into
    the folder first, so the folder and the repo match; nothing else in the folder is ever written.

    Args:
        folder (`str`): A folder written by `save_pretrained` / the training command.
        repo_id (`str`): `namespace/name` of the model repo; created (public unless `private`) if it does not exist.
        private (`bool`, *optional*): Visibility of a repo created by this call. An existing repo keeps its
            visibility (a warning says so when it differs).
        revision (`str`, *optional*): Branch to commit to (default `main`); created from `main` if it does not exist.
        commit_message (`str`, *optional*): Defaults to "Upload distilled student".
        token (`str`, *optional*): Defaults to the Hub client's own resolution (`HF_TOKEN`, then `hf auth login`).
        endpoint (`str`, *optional*): Defaults to `HF_ENDPOINT` (read by `huggingface_hub` at import), else the Hub.
        create_pr (`bool`): Open a pull request (against `revision`, default `main`) instead of committing to it.

    Returns:
        `str`: The URL of the commit.

    Raises:
        `ValueError`: The folder is not a loadable student (the message names the missing files).
        `RuntimeError`: A Hub request failed; the message names the step, the repo, the endpoint and the HTTP status.
            The push is one commit, so the repo is never left half-updated: re-running the same call completes it.
    """
    root = Path(folder)
    _check_student_folder(root)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token)

    readme_written = False
    if not (root / "README.md").is_file():
        build_model_card(str(root), model_id=repo_id).save(root / "README.md")
        readme_written = True

    def fail(step: str, err: BaseException) -> RuntimeError:
        context = {"folder": root, "repo_id": repo_id, "endpoint": endpoint, "readme_written": readme_written}
        return RuntimeError(_failure_message(step, err, **context))

    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    except _network_errors() as err:
        raise fail("creating the repo", err) from err
    if private is not None:
        _warn_on_visibility(api, repo_id, private)

    if revision and revision != constants.DEFAULT_REVISION and not _is_fixed_ref(revision):
        try:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        except _network_errors() as err:
            raise fail(f"creating the branch {revision!r}", err) from err

    # One commit with explicit operations rather than `upload_folder`: with hf_xet installed, huggingface_hub 2.x
    # routes `upload_folder` through a pipeline that may split a folder into several commits (and retries them); a
    # single `create_commit` keeps the push atomic: the repo never holds part of a student.
    operations = [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(root / path)) for path in files_to_push(root)
    ]
    try:
        commit = api.create_commit(
            repo_id,
            operations=operations,
            commit_message=commit_message or "Upload distilled student",
            revision=revision,
            create_pr=create_pr,
            repo_type="model",
        )
    except _network_errors() as err:
        raise fail("uploading", err) from err
    if create_pr and commit.pr_url:
        logger.info("Opened pull request %s", commit.pr_url)
    return commit.commit_url


def _check_student_folder(root: Path) -> None:
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a directory: pass the folder the student was saved to")
    if (root / "adapter_config.json").is_file():  # a peft adapter: its config and weights make the student
        missing = [name for name in ("adapter_model.safetensors",) if not (root / name).is_file()]
        if missing:
            raise ValueError(f"{str(root)!r} holds adapter_config.json but not {missing[0]}: save the adapter again")
        return
    missing = []
    if not (root / "config.json").is_file():
        missing.append("config.json")
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError) as err:
            raise ValueError(f"{index} is not a safetensors index (no weight_map): {err}") from err
        missing += [
            f"{shard} (listed in model.safetensors.index.json)" for shard in shards if not (root / shard).is_file()
        ]
    elif not (root / "model.safetensors").is_file():
        found = [p.name for p in root.glob("*.bin")] + [p.name for p in root.glob("*.safetensors")]
        hint = f"; found only {', '.join(sorted(found))}" if found else ""
        missing.append(f"a weights file (model.safetensors, or model.safetensors.index.json with its shards){hint}")
    if missing:
        raise ValueError(
            f"{str(root)!r} is not a saved student: missing {'; '.join(missing)}. Save it with "
            "`model.save_pretrained(folder)` (and the tokenizer with `tokenizer.save_pretrained(folder)`)."
        )


def _is_fixed_ref(revision: str) -> bool:
    """Commit oids and PR refs are not branches to create."""
    return bool(_COMMIT_OID.match(revision)) or revision.startswith("refs/")


def _warn_on_visibility(api: HfApi, repo_id: str, private: bool) -> None:
    try:
        actual = api.repo_info(repo_id, repo_type="model").private
    except _network_errors():
        return  # best effort: the upload itself reports real failures
    if actual is not None and bool(actual) != private:
        warnings.warn(
            f"{repo_id} already exists and is {'private' if actual else 'public'}; private={private} only applies to "
            "a repo created by this call. Change the visibility in the repo settings if needed.",
            stacklevel=3,
        )


def _network_errors() -> tuple[type[BaseException], ...]:
    """What a failed Hub call raises: HTTP errors, transport errors of the client's HTTP library, OS-level errors
    (including hf_xet's), and the RuntimeError that wraps a failed LFS transfer."""
    errors: list[type[BaseException]] = [HfHubHTTPError, OSError, RuntimeError]
    for module_name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module_name).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _http_cause(err: BaseException) -> HfHubHTTPError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, HfHubHTTPError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _request_stage(url: str) -> str | None:
    """Which request of an upload failed, from its URL."""
    stages = (
        ("/api/validate-yaml", "validating the model card metadata"),
        ("/preupload/", "asking which files go to large-file storage"),
        ("/xet-write-token/", "getting a Xet storage token"),
        (".git/info/lfs/", "uploading large files (LFS)"),
        ("/commit/", "creating the commit"),
        ("/branch/", "creating the branch"),
        ("/api/repos/create", "creating the repo"),
    )
    return next((label for marker, label in stages if marker in url), None)


def _failure_message(
    step: str, err: BaseException, *, folder: Path, repo_id: str, endpoint: str, readme_written: bool
) -> str:
    http_err = _http_cause(err)
    response = getattr(http_err, "response", None)
    status = getattr(response, "status_code", None)
    request = getattr(response, "request", None) if response is not None else None
    stage = _request_stage(str(request.url)) if request is not None and request.url is not None else None
    if step == "uploading" and stage is not None and stage != step:
        step = f"uploading ({stage})"

    if status == 401:
        reason = _AUTH_HINT
    elif status == 403:
        reason = "permission denied: the token cannot write to this repo (a write token, or org membership, is needed)"
    elif status is not None:
        server_message = getattr(http_err, "server_message", None) or ""
        reason = f"HTTP {status}" + (f": {server_message.strip()}" if server_message.strip() else "")
    else:
        reason = f"{type(err).__name__}: {err}"
    local = "The local folder is unchanged"
    if readme_written:
        local += " apart from the generated README.md (absent before; the next push reuses it)"
    retry = "re-running the same command completes the push"
    if status in (401, 403):
        retry = "once the token is fixed, " + retry
    return (
        f"Pushing {str(folder)!r} to {repo_id!r} on {endpoint} failed while {step}: {reason}. {local}. A push is a "
        f"single commit, so the repo holds either all of it or none of it; {retry}."
    )
