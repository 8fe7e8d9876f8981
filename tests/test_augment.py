"""`--augment`: a transfer set made from the training texts (hf_distill/augment.py).

Deterministic under a seed, never an evaluation (or training) text, no hard label (the hard-label loss skips the rows,
as `--unlabeled_file` rows), cached (a second run does not rebuild), refused for the tasks whose labels cannot follow
the words.
"""

import json

import pytest
import torch
from datasets import Dataset
from tiny_task_models import CORE_WORDS, case, data_files, save_teacher, tiny_tokenizer

from hf_distill import augment
from hf_distill.augment import AugmentSettings, build_transfer_set, nearest_word_neighbours, whole_word_vocabulary
from hf_distill.config import DistillationConfig
from hf_distill.data import DataArguments
from hf_distill.run import StudentArguments, _prepare
from hf_distill.tasks import IGNORE_INDEX

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = [
    "the movie was very good",
    "the film was not bad",
    "a very fine day",
    "it was a great movie",
    "the plot was very boring",
]


def embeddings(tokenizer, seed=0):
    """Random input embeddings in which "good" and "great" (and "bad" and "awful") are almost the same vector."""
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(len(tokenizer), 8, generator=generator)
    vocab = tokenizer.get_vocab()
    table[vocab["great"]] = table[vocab["good"]] + 0.01
    table[vocab["awful"]] = table[vocab["bad"]] + 0.01
    return table


def build(tmp_path, train=TRAIN, evaluation=(), **settings):
    tokenizer = tiny_tokenizer()
    defaults = {"copies": 4, "replace_prob": 0.4, "drop_prob": 0.2, "span_prob": 0.3, "neighbours": 2, "seed": 0}
    return build_transfer_set(
        Dataset.from_dict({"text": list(train), "label": [0] * len(train)}),
        [Dataset.from_dict({"text": list(evaluation)})] if evaluation else [],
        ["text"],
        tokenizer,
        embeddings(tokenizer),
        AugmentSettings(**{**defaults, **settings}),
        str(tmp_path / "augment-cache"),
    )


def test_neighbours_come_from_the_embedding_space():
    tokenizer = tiny_tokenizer()
    vocabulary = whole_word_vocabulary(tokenizer)
    assert set(vocabulary) == {w for w in CORE_WORDS if len(w) >= 2}  # no special tokens, no one-letter words
    neighbours = nearest_word_neighbours(["good", "bad", "unknownword"], vocabulary, embeddings(tokenizer), k=1)
    assert neighbours == {"good": ["great"], "bad": ["awful"]}


def test_deterministic_under_a_seed_and_without_labels(tmp_path):
    first = build(tmp_path / "one")
    assert first.column_names == ["text"]  # no label column: only the teacher labels these rows
    again = build(tmp_path / "two")
    assert list(first["text"]) == list(again["text"]) and len(first) > len(TRAIN)
    other = build(tmp_path / "three", seed=1)
    assert list(other["text"]) != list(first["text"])
    # Word replacement draws from the neighbours: "good" became "great" in some copy.
    assert any("great" in text.split() for text in first["text"])


def test_never_an_evaluation_or_training_text_nor_a_repeat(tmp_path):
    # Dropping "very" from the first training text gives an evaluation text: with dropout this likely, some copy does.
    evaluation = ["the movie was good", "a fine day"]
    settings = {"copies": 30, "replace_prob": 0.0, "drop_prob": 0.3, "span_prob": 0.0}
    unfiltered = build(tmp_path / "unfiltered", **settings)
    assert set(evaluation) & set(unfiltered["text"])  # the filter below has something to remove
    transfer = build(tmp_path / "filtered", evaluation=[e.upper() for e in evaluation], **settings)
    texts = list(transfer["text"])
    assert not {t.lower() for t in texts} & set(evaluation)  # compared case-insensitively
    assert not set(texts) & set(TRAIN) and len(set(texts)) == len(texts) and all(texts)


def test_cached_a_second_run_does_not_rebuild(tmp_path, monkeypatch):
    first = build(tmp_path)
    folders = list((tmp_path / "augment-cache").iterdir())
    assert len(folders) == 1

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(augment, "nearest_word_neighbours", no_rebuild)
    assert list(build(tmp_path)["text"]) == list(first["text"])
    with pytest.raises(AssertionError, match="rebuilt"):  # other settings: another fingerprint, built anew
        build(tmp_path, drop_prob=0.5)


def test_augmented_rows_join_the_transfer_set_without_hard_labels(tmp_path):
    task_case = case("text-classification")
    teacher = save_teacher(tmp_path / "teacher", task_case)
    files = data_files(tmp_path, task_case)  # 40 labelled rows, 8 unlabelled ones
    data_args = DataArguments(**files, augment=2, augment_cache_dir=str(tmp_path / "augment-cache"))
    config = DistillationConfig(output_dir=str(tmp_path / "out"), teacher_model_name_or_path=str(teacher))
    prepared = _prepare(StudentArguments(), data_args, config, ())
    unlabeled = prepared.datasets["unlabeled"]
    assert prepared.augmented > 40 and len(unlabeled) == 8 + prepared.augmented
    assert set(unlabeled["labels"]) == {IGNORE_INDEX}  # the hard-label loss skips every one of them
    assert len(prepared.train_dataset) == 40 + len(unlabeled)
    test_texts = {json.loads(line)["text"] for line in open(files["test_file"])}
    decoded = prepared.tokenizer.batch_decode(list(unlabeled["input_ids"]), skip_special_tokens=True)
    assert not set(decoded) & test_texts


def test_card_counts_the_augmented_examples(tmp_path):
    from hf_distill.model_card import _train_examples

    dataset = {"train_examples": 40, "unlabeled_examples": 71, "augmented_examples": 63}
    assert _train_examples(dataset) == (
        "40 labelled, plus 71 unlabelled (a transfer set, 63 of them augmented copies of the training texts "
        "(`--augment`): only the teacher's soft targets teach)"
    )


@pytest.mark.parametrize("case_id", ["token-classification", "question-answering", "causal-lm-gpt2", "regression"])
def test_refused_where_labels_cannot_follow_the_words(tmp_path, case_id):
    task_case = case(case_id)
    teacher = save_teacher(tmp_path / "teacher", task_case)
    files = data_files(tmp_path, task_case)
    files.pop("unlabeled_file", None)
    data_args = DataArguments(**files, augment=1, augment_cache_dir=str(tmp_path / "augment-cache"))
    config = DistillationConfig(output_dir=str(tmp_path / "out"), teacher_model_name_or_path=str(teacher))
    with pytest.raises(ValueError, match=r"^--augment 1: .*; leave out --augment$"):
        _prepare(StudentArguments(), data_args, config, ())


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"augment": -1}, "augment must be a whole number of copies"),
        ({"augment": 1, "augment_drop_prob": 1.5}, "augment_drop_prob must be a probability"),
        ({"augment": 1, "augment_replace_prob": 0, "augment_drop_prob": 0, "augment_span_prob": 0}, "all 0"),
    ],
)
def test_bad_settings_are_named_at_parsing(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        DataArguments(train_file=str(tmp_path / "train.csv"), **settings)


def test_a_build_stopped_while_saving_leaves_nothing_and_the_next_build_cleans_up_after_a_killed_one(
    tmp_path, monkeypatch
):
    """The transfer set is saved into a staging folder and renamed into place: Ctrl-C while saving leaves nothing
    that could be read as a finished set, and a staging folder that a killed build left is removed by the next one
    (it used to stay as `augment-<fingerprint>.partial-<pid>`)."""
    import socket
    import subprocess

    from hf_distill.output_folders import STAGING_PREFIX

    real = Dataset.save_to_disk

    def interrupted(self, path, **kwargs):
        real(self, path, **kwargs)
        raise KeyboardInterrupt  # after the files are written, before the rename

    monkeypatch.setattr(Dataset, "save_to_disk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path)
    cache = tmp_path / "augment-cache"
    assert list(cache.iterdir()) == []
    monkeypatch.setattr(Dataset, "save_to_disk", real)
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = cache / f"{STAGING_PREFIX}{socket.gethostname()}-{dead.pid}-0a1b2c3d"
    killed.mkdir()
    (killed / "data-00000-of-00001.arrow").write_bytes(b"half")
    build(tmp_path)
    assert [p.name for p in cache.iterdir()] == [next(cache.glob("augment-*")).name]
