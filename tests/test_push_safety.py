"""What may reach the Hub, and what must not: against the loopback Hub (tests/hub_server.py).

Training state (optimizer, scheduler, RNG states, `trainer_state.json`, `training_args.bin`, which holds the hub token
in plain text), checkpoints and the hidden-state projections never leave the machine, whichever `hub_strategy` is
set; `push_student` publishes the files of a transformers model folder by their exact names, never a symlink that
leaves the folder, refuses a bad repo id before writing anything, and gives up on a silent endpoint in seconds.
"""

import os
import socket
import time
from pathlib import Path

import pytest
import torch
from tiny_task_models import pad_collate, random_classification_dataset, tiny_bert, tiny_tokenizer

from hf_distill import DistillationConfig, DistillationTrainer
from hf_distill.hub import PushArguments, files_to_push, push_student

pytestmark = pytest.mark.timeout(120)

REPO = "test-user/pushed-while-training"
# Names (or name parts) that must never appear in any commit of any repo.
NEVER_PUBLISHED = (
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state",
    "trainer_state.json",
    "checkpoint-",
    "last-checkpoint",
    "distillation_projections.safetensors",
)


def train_and_push(tmp_path, token, strategy, **overrides):
    torch.manual_seed(0)
    settings = {
        "output_dir": str(tmp_path / "out"),
        "report_to": "none",
        "use_cpu": True,
        "per_device_train_batch_size": 8,
        "max_steps": 2,
        "save_strategy": "steps",
        "save_steps": 1,
        "hidden_weight": 1.0,  # so that checkpoints hold projections
        "disable_tqdm": True,
        "push_to_hub": True,
        "hub_strategy": strategy,
        "hub_model_id": REPO,
        "hub_token": token,
        **overrides,
    }
    trainer = DistillationTrainer(
        model=tiny_bert(num_layers=2, hidden=16, seed=1),
        teacher_model=tiny_bert(num_layers=4, seed=0),
        args=DistillationConfig(**settings),
        train_dataset=random_classification_dataset(16),
        data_collator=pad_collate,
        processing_class=tiny_tokenizer(),
    )
    trainer.train()
    trainer.push_to_hub()
    trainer._finish_current_push()  # transformers' own pushes run in the background
    return trainer


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("strategy", ["every_save", "checkpoint", "all_checkpoints", "end"])
def test_pushes_during_training_send_only_the_student(hub, tmp_path, strategy):
    server = hub(xet=False, lfs_patterns=())  # every byte travels inline in the commit, where the server keeps it
    refused = None
    try:
        trainer = train_and_push(tmp_path, server.token, strategy)
    except ValueError as err:
        refused = err

    published = server.every_file_ever()
    arrived = sorted(published)
    leaks = [name for name in arrived if any(bad in name for bad in NEVER_PUBLISHED)]
    token = server.token.encode()
    token_in = [name for name, data in published.items() if token in data]
    token_in += [f"{method} {path}" for method, path, body in server.bodies if token in body]
    assert not leaks and not token_in, f"hub_strategy={strategy}: arrived {arrived}"

    if strategy in ("checkpoint", "all_checkpoints"):
        assert refused is not None, f"hub_strategy={strategy} was accepted; arrived {arrived}"
        message = str(refused)
        assert f"hub_strategy={strategy!r}" in message and "optimizer" in message and "'every_save'" in message
        assert server.repos == {} and server.bodies == []  # refused before any request
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
        return
    assert refused is None, refused
    head = server.head(REPO)
    assert set(head.files) == set(files_to_push(trainer.args.output_dir)) | {".gitattributes"}
    commits = server.repo(REPO).commits.values()
    pushes = sorted(c.summary for c in commits if c.parent is not None)
    if strategy == "every_save":  # one commit per save (steps 1 and 2), then the final one
        assert pushes == ["End of training", "Training in progress, step 1", "Training in progress, step 2"]
    else:
        assert pushes == ["End of training"]
    allowed = set(files_to_push(trainer.args.output_dir)) | {".gitattributes"}
    for commit in commits:
        assert set(commit.files) <= allowed, (commit.summary, sorted(commit.files))


def test_bad_hub_model_id_is_refused_at_start_before_anything_is_written(hub, tmp_path):
    server = hub(xet=False)
    with pytest.raises(ValueError, match=r"hub_model_id '\.\./x' is not a valid Hub repo id"):
        train_and_push(tmp_path, server.token, "end", hub_model_id="../x")
    assert server.bodies == []
    assert not (tmp_path / "out" / "README.md").exists()


# ---- push_student: exact names, no links out of the folder, a bad repo id, a silent endpoint ------------------------


@pytest.fixture
def student(tmp_path):
    folder = tmp_path / "student"
    tiny_bert(num_layers=2, hidden=16, seed=1).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_only_the_files_of_a_model_folder_by_their_exact_names(student):
    decoys = [
        "model_backup_private.safetensors",
        "model-private.safetensors",
        "model-00009-of-00009.safetensors",  # a shard name, but no index lists it
        "private.model",
        "notes.png",
        "tokenizer.json.bak",
        "pytorch_model.bin",
    ]
    for name in decoys:
        (student / name).write_bytes(b"private " + name.encode())
    (student / "distillation.png").write_bytes(b"\x89PNG plot the run wrote")
    (student / "spiece.model").write_bytes(b"a sentencepiece model")  # a real tokenizer file name (T5, ALBERT)
    (student / "README.md").write_text("# card\n![curve](figures.png)\n", encoding="utf-8")
    (student / "figures.png").write_bytes(b"\x89PNG shown by the card")

    pushed = files_to_push(student)
    assert not set(decoys) & set(pushed), sorted(set(decoys) & set(pushed))
    assert pushed == [
        "README.md",
        "config.json",
        "distillation.png",
        "figures.png",
        "model.safetensors",
        "spiece.model",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


def test_sharded_weights_are_pushed_by_the_names_the_index_lists(tmp_path):
    folder = tmp_path / "sharded"
    tiny_bert(num_layers=2, hidden=16, seed=1).save_pretrained(folder, max_shard_size="20KB")
    shards = sorted(p.name for p in folder.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1
    (folder / "model-00001-of-00001.safetensors").write_bytes(b"stale shard of an older save")
    assert files_to_push(folder) == ["config.json", *shards, "model.safetensors.index.json"]


def test_symlink_leaving_the_folder_is_refused_before_any_request(hub, student, tmp_path):
    server = hub()
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:the contents of /etc/passwd\n", encoding="utf-8")
    (student / "vocab.txt").symlink_to(secret)

    with pytest.raises(ValueError) as excinfo:
        push_student(str(student), "test-user/linked")
    message = str(excinfo.value)
    assert "vocab.txt" in message and str(secret) in message and "outside" in message
    assert server.bodies == [] and not (student / "README.md").exists()


def test_symlink_inside_the_folder_is_fine(hub, student):
    server = hub(xet=False)
    (student / "sub").mkdir()
    (student / "tokenizer.json").rename(student / "sub" / "tokenizer.json")
    (student / "tokenizer.json").symlink_to(Path("sub") / "tokenizer.json")
    push_student(str(student), "test-user/linked-inside")
    assert (
        server.files("test-user/linked-inside")["tokenizer.json"] == (student / "sub" / "tokenizer.json").read_bytes()
    )


@pytest.mark.parametrize("repo_id", ["../x", "a/b/c", "name with spaces"])
def test_bad_repo_id_is_refused_before_anything_is_written(hub, student, repo_id):
    server = hub()
    before = sorted(os.listdir(student))
    with pytest.raises(ValueError, match=rf"{repo_id!r} is not a valid Hub repo id"):
        push_student(str(student), repo_id)
    assert sorted(os.listdir(student)) == before and server.bodies == []


@pytest.mark.timeout(30)
def test_an_endpoint_that_never_answers_times_out_naming_the_step(student, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_DISTILL_HUB_TIMEOUT", "1")
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(RuntimeError) as excinfo:
            push_student(str(student), "test-user/silent", PushArguments(endpoint=endpoint, token="hf_some_token"))
        elapsed = time.monotonic() - start
        message = str(excinfo.value)
        assert elapsed < 10, elapsed
        assert "while creating the repo" in message and "no answer" in message and "within 1 s" in message
        assert endpoint in message and "HF_DISTILL_HUB_TIMEOUT" in message

        start = time.monotonic()
        with pytest.raises(RuntimeError, match="no answer"):  # the argument wins over the environment
            settings = PushArguments(endpoint=endpoint, token="hf_some_token")
            push_student(str(student), "test-user/silent", settings, timeout=0.5)
        assert time.monotonic() - start < 5


def test_the_push_settings_are_a_push_arguments(student):
    with pytest.raises(TypeError, match=r"^push_student takes its settings as a PushArguments, got dict: "):
        push_student(str(student), "test-user/typed", {"private": True})
    assert not (student / "README.md").exists()  # refused before the card is written
