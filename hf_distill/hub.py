"""Push a distilled student folder to the Hugging Face Hub: the inference files only, in one commit, with a model card.

A training output folder holds more than the model: hidden-state projections, optimizer and scheduler states, RNG
states, `training_args.bin` (which holds the hub token), `checkpoint-*` folders, and whatever else the user keeps
there. [`push_student`] uploads only the files a transformers model folder has, by their exact names
([`files_to_push`] lists them without touching the network), and refuses a file that is a symlink to somewhere outside
the folder. Every Hub request has a timeout (`HF_DISTILL_HUB_TIMEOUT`, default 60 s), so a silent endpoint fails in
seconds, naming the step.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import get_session
from huggingface_hub.utils import validate_repo_id as _hub_validate_repo_id

from .log import get_logger
from .model_card import build_model_card
from .model_files import CARD_FILES, MODEL_FILES, PLOT_FILES, TOKENIZER_FILES

__all__ = [
    "DEFAULT_TIMEOUT",
    "MODEL_FILES",
    "PLOT_FILES",
    "TOKENIZER_FILES",
    "PushArguments",
    "check_repo_id",
    "create_repo",
    "files_to_push",
    "push_student",
]

logger = get_logger(__name__)

_SHARD_NAME = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
_IMAGE_LINK = re.compile(r"""(?:\]\(|src=["'])([^)"'\s/\\]+\.(?:png|jpe?g|gif|svg|webp))""", re.IGNORECASE)

DEFAULT_TIMEOUT = 60.0  # seconds without an answer before a Hub request gives up
TIMEOUT_ENV = "HF_DISTILL_HUB_TIMEOUT"

_COMMIT_OID = re.compile(r"^[0-9a-f]{40}$")
_AUTH_HINT = "authentication failed: check HF_TOKEN or `hf auth login`"


def files_to_push(folder: str | os.PathLike) -> list[str]:
    """The files of `folder` that [`push_student`] uploads (names in the folder, sorted).

    Only top-level files named as a transformers model folder names them: weights (`model.safetensors`, or the shards
    that `model.safetensors.index.json` lists), `config.json`, `generation_config.json`, adapter files, tokenizer files
    ([`TOKENIZER_FILES`] and the saved tokenizer class's own file names), `README.md`, `distillation_metrics.json`, the
    plots of [`PLOT_FILES`] and images that `README.md` shows. Anything else (a `model_backup.safetensors`, a
    `notes.png`, sub-folders) stays local.

    Raises:
        `ValueError`: one of those files is a symlink to a place outside the folder (the message names the link and
            its target); copy the file into the folder if it is meant to be published.
    """
    root = Path(folder)
    names = set(MODEL_FILES) | set(TOKENIZER_FILES) | set(CARD_FILES) | set(PLOT_FILES)
    names |= _indexed_shards(root) | _tokenizer_file_names(root) | _images_shown_by_card(root)
    chosen = sorted(name for name in names if (root / name).is_file())
    _refuse_links_out_of(root, chosen)
    return chosen


def _indexed_shards(root: Path) -> set[str]:
    index = root / "model.safetensors.index.json"
    if not index.is_file():
        return set()
    try:
        listed = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
    except (ValueError, KeyError, AttributeError):
        return set()  # reported by _check_student_folder
    return {name for name in listed if isinstance(name, str) and _SHARD_NAME.match(name)}


def _tokenizer_file_names(root: Path) -> set[str]:
    """The file names the saved tokenizer's class declares (`vocab_files_names`), e.g. `source.spm` for Marian."""
    try:
        config = json.loads((root / "tokenizer_config.json").read_text(encoding="utf-8"))
        from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

        tokenizer_class = tokenizer_class_from_name(config["tokenizer_class"])
        declared = getattr(tokenizer_class, "vocab_files_names", None) or {}
    except Exception:  # noqa: BLE001 - best effort: no config, an unknown class, or an optional dependency missing
        return set()
    return {name for name in declared.values() if isinstance(name, str) and "/" not in name}


def _images_shown_by_card(root: Path) -> set[str]:
    try:
        card = (root / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    return set(_IMAGE_LINK.findall(card))


def _refuse_links_out_of(root: Path, names: list[str]) -> None:
    real_root = root.resolve()
    for name in names:
        path = root / name
        target = path.resolve()
        if target != real_root and real_root not in target.parents:
            link = os.readlink(path) if path.is_symlink() else str(target)
            shown = repr(link) if link == str(target) else f"{link!r} ({target})"
            raise ValueError(
                f"{str(path)!r} is a symlink to {shown}, outside {str(root)!r}: hf_distill does not "
                "publish files from outside the folder. Replace the link with a copy of the file "
                f"(`cp --remove-destination {target} {path}`) if it is meant to be published, or remove it."
            )


def check_repo_id(repo_id: str, what: str = "repo id") -> None:
    """Refuses a name the Hub would refuse (`../x`, `a/b/c`, spaces), before anything is written for it.

    Args:
        repo_id (`str`): `name` or `namespace/name`.
        what (`str`): what the value is called where it was given (`hub_model_id`, `--repo_id`), for the message.

    Raises:
        `ValueError`: naming the value, why, and the expected form.
    """
    try:
        if not isinstance(repo_id, str) or not repo_id:
            raise HFValidationError(f"expected a non-empty string, got {repo_id!r}")
        _hub_validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(
            f"{what} {repo_id!r} is not a valid Hub repo id ({err}). Give `namespace/name` (e.g. "
            "`your-name/distilled-student`) or `name`: letters, digits, '-', '_' and '.', not starting or ending with "
            "'-' or '.'. Nothing was written or uploaded."
        ) from None


def _timeout_seconds(timeout: float | None) -> float:
    if timeout is not None:
        return float(timeout)
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds; set e.g. {TIMEOUT_ENV}=120") from None
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={value!r} must be a positive number of seconds")
    return seconds


@contextlib.contextmanager
def hub_timeout(seconds: float) -> Iterator[None]:
    """Bounds every request of `huggingface_hub`'s shared HTTP client to `seconds` without an answer, for the time of
    the block. huggingface_hub 2.x builds that client with no timeout (`timeout=None`): a server that accepts the
    connection and never answers would hold a push forever. A timeout the user configured (`set_client_factory`) is
    kept."""
    session = get_session()
    previous = session.timeout
    unbounded = all(getattr(previous, part, None) is None for part in ("connect", "read", "write", "pool"))
    if unbounded:
        session.timeout = seconds
    try:
        yield
    finally:
        if unbounded:
            session.timeout = previous


def create_repo(
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    timeout: float | None = None,
) -> str:
    """Creates the model repo `repo_id` if it does not exist; returns its full id (`namespace/name`).

    What [`DistillationTrainer`] calls at start-up with `push_to_hub=True` in place of transformers' own, so that a bad
    id, a wrong token or a silent endpoint fails before training, with the same messages as [`push_student`].

    Raises:
        `ValueError`: the repo id is not valid.
        `RuntimeError`: the request failed or timed out (the message names the step, the repo and the endpoint).
    """
    check_repo_id(repo_id)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    seconds = _timeout_seconds(timeout)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        with hub_timeout(seconds):
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    except _network_errors() as err:
        message = _failure_message(
            "creating the repo",
            err,
            folder=None,
            repo_id=repo_id,
            endpoint=endpoint,
            readme_written=False,
            timeout=seconds,
        )
        raise RuntimeError(message) from err
    return url.repo_id or repo_id


@dataclass
class PushArguments:
    """How [`push_student`] publishes a folder: the options of `hf-distill push` besides the folder and the repo.

    Every field is optional: `PushArguments()` commits to `main` of a public repo (one created by the push), with the
    Hub client's own token and endpoint.
    """

    private: bool | None = field(
        default=None, metadata={"help": "Create the repo private (an existing repo keeps its visibility)."}
    )
    revision: str | None = field(
        default=None, metadata={"help": "Branch to commit to (default main); created if needed."}
    )
    commit_message: str | None = field(default=None, metadata={"help": "Commit message."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN, then `hf auth login`)."})
    endpoint: str | None = field(default=None, metadata={"help": "Hub endpoint (default: HF_ENDPOINT, else the Hub)."})
    create_pr: bool = field(default=False, metadata={"help": "Open a pull request instead of committing."})


def push_student(
    folder: str,
    repo_id: str,
    args: PushArguments | None = None,
    *,
    timeout: float | None = None,
) -> str:
    """
    Upload a saved student to a Hub model repo in one commit and return the commit URL.

    The folder and the repo id are checked first (`config.json` and safetensors weights; no file linked from outside
    the folder). Only the files of [`files_to_push`] are uploaded. When the folder has no `README.md`, a model card is
    generated with [`build_model_card`] and written into the folder first, so the folder and the repo match; nothing
    else in the folder is ever written.

    Args:
        folder (`str`): A folder written by `save_pretrained` / the training command.
        repo_id (`str`): `namespace/name` of the model repo; created (public unless `args.private`) if it does not
            exist.
        args ([`PushArguments`], *optional*): the push's settings (default: `PushArguments()`):
            - `private`: visibility of a repo created by this call. An existing repo keeps its visibility (a warning
              says so when it differs).
            - `revision`: branch to commit to (default `main`); created from `main` if it does not exist.
            - `commit_message`: defaults to "Upload distilled student".
            - `token`: defaults to the Hub client's own resolution (`HF_TOKEN`, then `hf auth login`).
            - `endpoint`: defaults to `HF_ENDPOINT` (read by `huggingface_hub` at import), else the Hub.
            - `create_pr`: open a pull request (against `revision`, default `main`) instead of committing to it.
        timeout (`float`, *optional*): Seconds each request may wait for an answer; defaults to
            `HF_DISTILL_HUB_TIMEOUT`, else 60.

    Returns:
        `str`: The URL of the commit.

    Raises:
        `TypeError`: `args` is not a [`PushArguments`].
        `ValueError`: The folder is not a loadable student (the message names the missing files), a file links out of
            the folder, or the repo id is not valid; nothing is written or uploaded then.
        `RuntimeError`: A Hub request failed or timed out; the message names the step, the repo, the endpoint and the
            HTTP status. The push is one commit, so the repo is never left half-updated: re-running the same call
            completes it.
    """
    if args is None:
        args = PushArguments()
    elif not isinstance(args, PushArguments):
        raise TypeError(
            f"push_student takes its settings as a PushArguments, got {type(args).__name__}: "
            "push_student(folder, repo_id, PushArguments(private=..., revision=..., ...))"
        )
    root = Path(folder)
    check_repo_id(repo_id)
    _check_student_folder(root)
    files_to_push(root)  # refuses links out of the folder before anything is written
    seconds = _timeout_seconds(timeout)
    endpoint = (args.endpoint or constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=args.token)

    readme_written = False
    if not (root / "README.md").is_file():
        build_model_card(str(root), model_id=repo_id).save(root / "README.md")
        readme_written = True

    def fail(step: str, err: BaseException) -> RuntimeError:
        context = {"folder": root, "repo_id": repo_id, "endpoint": endpoint, "readme_written": readme_written}
        return RuntimeError(_failure_message(step, err, timeout=seconds, **context))

    with hub_timeout(seconds):
        logger.info("Pushing %s to %s on %s", root, repo_id, endpoint)
        try:
            api.create_repo(repo_id, private=args.private, exist_ok=True, repo_type="model")
        except _network_errors() as err:
            raise fail("creating the repo", err) from err
        if args.private is not None:
            _warn_on_visibility(api, repo_id, args.private)

        if args.revision and args.revision != constants.DEFAULT_REVISION and not _is_fixed_ref(args.revision):
            try:
                api.create_branch(repo_id, branch=args.revision, exist_ok=True, repo_type="model")
            except _network_errors() as err:
                raise fail(f"creating the branch {args.revision!r}", err) from err

        # One commit with explicit operations rather than `upload_folder`: with hf_xet installed, huggingface_hub 2.x
        # routes `upload_folder` through a pipeline that may split a folder into several commits (and retries them); a
        # single `create_commit` keeps the push atomic: the repo never holds part of a student. The list is taken again
        # here, since the card may have been written since.
        operations = [
            CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(root / path)) for path in files_to_push(root)
        ]
        try:
            commit = api.create_commit(
                repo_id,
                operations=operations,
                commit_message=args.commit_message or "Upload distilled student",
                revision=args.revision,
                create_pr=args.create_pr,
                repo_type="model",
            )
        except _network_errors() as err:
            raise fail("uploading", err) from err
    if args.create_pr and commit.pr_url:
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


def _timed_out(err: BaseException) -> bool:
    seen = set()
    while err is not None and id(err) not in seen:
        if (
            isinstance(err, TimeoutError)
            or type(err).__name__.endswith("Timeout")
            or "TimeoutException" in {cls.__name__ for cls in type(err).__mro__}
        ):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _failure_message(
    step: str,
    err: BaseException,
    *,
    folder: Path | None,
    repo_id: str,
    endpoint: str,
    readme_written: bool,
    timeout: float | None = None,
) -> str:
    http_err = _http_cause(err)
    response = getattr(http_err, "response", None)
    status = getattr(response, "status_code", None)
    request = getattr(response, "request", None) if response is not None else None
    if request is None:
        request = getattr(err, "request", None) if not isinstance(err, HfHubHTTPError) else None
    try:
        url = request.url if request is not None else None
    except RuntimeError:  # httpx raises when an exception carries no request
        url = None
    stage = _request_stage(str(url)) if url is not None else None
    if step == "uploading" and stage is not None and stage != step:
        step = f"uploading ({stage})"

    if status == 401:
        reason = _AUTH_HINT
    elif status == 403:
        reason = "permission denied: the token cannot write to this repo (a write token, or org membership, is needed)"
    elif status is not None:
        server_message = getattr(http_err, "server_message", None) or ""
        reason = f"HTTP {status}" + (f": {server_message.strip()}" if server_message.strip() else "")
    elif _timed_out(err):
        reason = (
            f"no answer from {endpoint} within {timeout:g} s ({type(err).__name__}): the endpoint accepts connections "
            f"but does not reply; check HF_ENDPOINT and any proxy, or allow more time with {TIMEOUT_ENV}=SECONDS"
        )
    else:
        reason = f"{type(err).__name__}: {err}"
    retry = "re-running the same command completes the push"
    if status in (401, 403):
        retry = "once the token is fixed, " + retry
    if folder is None:  # creating the repo at the start of training: nothing was written
        return f"Creating the repo {repo_id!r} on {endpoint} failed while {step}: {reason}. Nothing was uploaded."
    local = "The local folder is unchanged"
    if readme_written:
        local += " apart from the generated README.md (absent before; the next push reuses it)"
    return (
        f"Pushing {str(folder)!r} to {repo_id!r} on {endpoint} failed while {step}: {reason}. {local}. A push is a "
        f"single commit, so the repo holds either all of it or none of it; {retry}."
    )
