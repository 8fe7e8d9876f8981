"""`push_student` against a local Hub look-alike (tests/hub_server.py): the real `huggingface_hub` client uploads
(inline, legacy LFS, Xet with a local CAS), then downloads with `snapshot_download` and `from_pretrained`."""

import hashlib
import json
import re
import shutil
import socket
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError
from tiny_task_models import tiny_bert, tiny_tokenizer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_distill.hub import PushArguments, files_to_push, push_student
from hf_distill.model_card import METRICS_FILE

pytestmark = pytest.mark.timeout(60)

REPO = "test-user/tiny-student"
TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
LEFTOVERS = [
    "distillation_projections.safetensors",
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state_0.pth",
    "trainer_state.json",
    "checkpoint-1/model.safetensors",
    "checkpoint-1/config.json",
    "runs/events.out.tfevents",
]
METRICS = {
    "task": "text-classification",
    "dataset": {"name": "tweets.csv", "train_examples": 64, "eval_split": "test", "eval_examples": 16},
    "teacher": {"name_or_path": TEACHER, "num_layers": 4, "accuracy": 0.75, "latency_ms_per_batch": 10.0},
    "student": {"num_layers": 2, "accuracy": 0.7, "latency_ms_per_batch": 4.0, "teacher_layers": [0, 2]},
}


@pytest.fixture(scope="module")
def saved_student(tmp_path_factory):
    """A tiny saved BERT classifier with tokenizer and metrics, plus training leftovers and a plot."""
    folder = tmp_path_factory.mktemp("template") / "student"
    tokenizer = tiny_tokenizer()
    tiny_bert(num_layers=2, seed=0, vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / METRICS_FILE).write_text(json.dumps(METRICS), encoding="utf-8")
    (folder / "distillation.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    for leftover in LEFTOVERS:
        (folder / leftover).parent.mkdir(parents=True, exist_ok=True)
        (folder / leftover).write_bytes(b"training state " + leftover.encode())
    return folder


@pytest.fixture
def student(saved_student, tmp_path):
    """A fresh copy of the saved student for each test (pushing may write README.md into it)."""
    return Path(shutil.copytree(saved_student, tmp_path / "student"))


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_files_to_push_is_the_allow_list(student):
    (student / "README.md").write_text("---\nlicense: mit\n---\n", encoding="utf-8")
    assert files_to_push(student) == [
        "README.md",
        "config.json",
        "distillation.png",
        METRICS_FILE,
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


@pytest.mark.parametrize("transport", ["regular", "lfs", "xet", "xet-upload-http-download"])
def test_push_then_download(hub, student, tmp_path, transport):
    server = hub(
        xet=transport.startswith("xet"),
        lfs_patterns=() if transport == "regular" else ("*.safetensors", "*.png"),
        serve_xet=transport == "xet",  # else the server answers plain bytes, rebuilt from its CAS
    )

    url = push_student(str(student), REPO)

    head = server.head(REPO)
    assert url == f"{server.endpoint}/{REPO}/commit/{head.oid}"
    assert (student / "README.md").is_file()  # generated, so the folder and the repo match
    pushed = files_to_push(student)
    assert set(head.files) == set(pushed) | {".gitattributes"}
    for leftover in LEFTOVERS:
        assert leftover not in head.files
    assert not any(path.startswith(("checkpoint-1/", "runs/")) for path in head.files)

    # Which transport carried the weights.
    weights = head.files["model.safetensors"]
    paths = [path for _, path in server.requests]
    if transport == "regular":
        assert not weights.lfs and not any(".git/info/lfs" in p or "xet" in p for p in paths)
    elif transport == "lfs":
        assert weights.lfs and weights.xet_hash is None
        assert any(p.endswith(".git/info/lfs/objects/batch") for p in paths) and server.xet_tokens_issued == []
    else:
        # hf_xet chunked the files into the local CAS; the server mapped the commit's sha256 oids to Xet hashes by
        # reading the shards, and rebuilt each file from the CAS to check its sha256.
        assert weights.lfs and re.fullmatch(r"[0-9a-f]{64}", weights.xet_hash)
        assert server.xet_tokens_issued == ["write"] and list(server.cas_dir.rglob("*.mdb"))
        assert not any(".git/info/lfs" in p for p in paths)
        assert weights.sha256 == hashlib.sha256((student / "model.safetensors").read_bytes()).hexdigest()

    # Download the repo and compare every file with the local folder.
    downloaded = Path(snapshot_download(REPO, endpoint=server.endpoint, cache_dir=str(tmp_path / "cache")))
    for path in pushed:
        assert (downloaded / path).read_bytes() == (student / path).read_bytes(), path
    weights_get = ("GET", f"/{REPO}/resolve/{head.oid}/model.safetensors")
    if transport == "xet":
        # The weights came through hf_xet from the CAS (read token), not as bytes from /resolve.
        assert "read" in server.xet_tokens_issued and weights_get not in server.requests
    else:
        assert "read" not in server.xet_tokens_issued and weights_get in server.requests

    # And load it by repo id, through HF_ENDPOINT.
    model = AutoModelForSequenceClassification.from_pretrained(REPO, cache_dir=str(tmp_path / "cache2"))
    local = AutoModelForSequenceClassification.from_pretrained(student)
    remote_state, local_state = model.state_dict(), local.state_dict()
    assert remote_state.keys() == local_state.keys()
    for name, tensor in local_state.items():
        assert torch.equal(remote_state[name], tensor), name
    tokenizer = AutoTokenizer.from_pretrained(REPO, cache_dir=str(tmp_path / "cache2"))
    assert tokenizer("good movie")["input_ids"] == AutoTokenizer.from_pretrained(student)("good movie")["input_ids"]
    assert server.unhandled == []


def test_private_branch_and_message_reach_the_server(hub, student):
    server = hub()
    settings = PushArguments(private=True, revision="distilled", commit_message="Distilled from MiniLM")
    url = push_student(str(student), REPO, settings)

    repo = server.repo(REPO)
    assert repo.private
    assert set(repo.branches) == {"main", "distilled"}
    head = server.head(REPO, "distilled")
    assert head.summary == "Distilled from MiniLM" and url.endswith(head.oid)
    assert set(server.head(REPO, "main").files) == {".gitattributes"}  # main untouched
    assert "model.safetensors" in head.files
    branches = {ref.name for ref in HfApi(endpoint=server.endpoint).list_repo_refs(REPO).branches}
    assert branches == {"main", "distilled"}
    with pytest.raises(RepositoryNotFoundError):  # private: invisible without the token
        HfApi(endpoint=server.endpoint, token=False).model_info(REPO)

    # A second push to the existing branch; asking for a public repo that exists as private warns.
    (student / "distillation.png").write_bytes(b"\x89PNG a new plot")
    with pytest.warns(UserWarning, match="already exists and is private"):
        push_student(str(student), REPO, PushArguments(private=False, revision="distilled"))
    assert server.files(REPO, "distilled")["distillation.png"] == b"\x89PNG a new plot"


def test_failed_commit_then_retry(hub, student):
    server = hub()
    before = tree_hashes(student)
    server.fail_next("commit", 500)

    with pytest.raises(RuntimeError) as excinfo:
        push_student(str(student), REPO)
    message = str(excinfo.value)
    assert "uploading (creating the commit)" in message and "HTTP 500" in message
    assert REPO in message and server.endpoint in message
    assert "re-running the same command completes the push" in message

    after = tree_hashes(student)
    assert set(after) - set(before) == {"README.md"}  # absent before: generated once, and nothing else touched
    assert {path: after[path] for path in before} == before
    assert set(server.head(REPO).files) == {".gitattributes"}  # no partial commit

    push_student(str(student), REPO)
    assert tree_hashes(student) == after  # the README is reused, not rewritten
    files = server.files(REPO)
    assert set(files) == set(files_to_push(student)) | {".gitattributes"}
    assert all(files[path] == (student / path).read_bytes() for path in files_to_push(student))


def test_failure_with_readme_present_leaves_folder_byte_identical(hub, student):
    server = hub()
    (student / "README.md").write_text("---\nlicense: mit\n---\n# My own card\n", encoding="utf-8")
    before = tree_hashes(student)
    server.fail_next("create", 503)

    with pytest.raises(RuntimeError, match=r"while creating the repo: HTTP 503") as excinfo:
        push_student(str(student), REPO)
    assert "unchanged" in str(excinfo.value) and "README" not in str(excinfo.value)
    assert tree_hashes(student) == before

    push_student(str(student), REPO)
    assert server.files(REPO)["README.md"] == b"---\nlicense: mit\n---\n# My own card\n"


def test_wrong_token(hub, student):
    server = hub()
    with pytest.raises(RuntimeError) as excinfo:
        push_student(str(student), REPO, PushArguments(token="hf_wrong"))
    message = str(excinfo.value)
    assert "authentication failed: check HF_TOKEN or `hf auth login`" in message
    assert "creating the repo" in message and REPO in message
    assert server.repos == {}


def test_unreachable_endpoint(hub, student):
    hub()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(RuntimeError, match="while creating the repo") as excinfo:
        push_student(str(student), REPO, PushArguments(endpoint=endpoint))
    assert endpoint in str(excinfo.value)


def test_pushed_card_metadata(hub, student):
    server = hub()
    push_student(str(student), REPO)
    readme = server.files(REPO)["README.md"].decode()
    assert readme == (student / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(readme.split("---\n")[1])
    assert meta["base_model"] == TEACHER
    assert meta["pipeline_tag"] == "text-classification" and meta["library_name"] == "transformers"
    assert {"distillation", "hf-distill", "knowledge-distillation"} <= set(meta["tags"])
    assert meta["model-index"][0]["name"] == "tiny-student"
    assert meta["model-index"][0]["results"][0]["metrics"][0] == {"type": "accuracy", "value": 0.7, "name": "Accuracy"}
    assert f'pipeline("text-classification", model="{REPO}")' in readme
    assert "2.50×" in readme  # speed-up 10.0 / 4.0


def test_invalid_folder_fails_before_any_request(hub, student):
    server = hub()
    (student / "model.safetensors").unlink()
    (student / "config.json").unlink()
    with pytest.raises(ValueError, match=r"missing config\.json; a weights file \(model\.safetensors"):
        push_student(str(student), REPO)
    with pytest.raises(ValueError, match="not a directory"):
        push_student(str(student / "nope"), REPO)
    assert server.requests == [] and not (student / "README.md").exists()


def test_create_pr(hub, student):
    server = hub()
    push_student(str(student), REPO)
    before = server.files(REPO)["distillation.png"]
    (student / "distillation.png").write_bytes(b"\x89PNG a new plot")
    push_student(str(student), REPO, PushArguments(create_pr=True))
    assert server.files(REPO)["distillation.png"] == before
    assert server.files(REPO, "refs/pr/1")["distillation.png"] == b"\x89PNG a new plot"
