"""The bad inputs of what was added since the last sweep: width pruning, sampled caches, `--augment`, on-policy
settings, divergence parameters. Each is one line that names the input and the fix, raised at start-up: when parsing
the flags, or once the teacher is loaded but before the data is read or the teacher runs.

(`compress` and GGUF teachers have theirs in test_compress.py and test_gguf_teacher.py.)"""

import re

import pytest
from tiny_task_models import (
    CORE_WORDS,
    classifier,
    llama,
    make_config,
    pad_batch,
    random_task_rows,
    tiny_tokenizer,
    write_corpus,
    write_sentiment_rows,
)

from hf_distill.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = len(CORE_WORDS) + 5  # the rows of tiny_tokenizer()


@pytest.fixture
def teacher_dir(tmp_path):
    """A 4-layer BERT classifier: hidden 32, 4 heads of size 8, 37 feed-forward neurons."""
    folder = tmp_path / "teacher"
    classifier(num_layers=4, vocab_size=VOCAB).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def before_the_data(monkeypatch):
    """Fails the test if the data files are read or the teacher is loaded: the refusal must come first."""
    import hf_distill.run as run

    def read(*args, **kwargs):
        raise AssertionError("the data was read before the refusal")

    monkeypatch.setattr(run, "load_raw_datasets", read)


def refusal(argv, capsys) -> tuple[int, str]:
    """The exit code and the one line the command printed on stderr (a usage error prints its usage line first)."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    printed = capsys.readouterr().err
    errors = [line for line in printed.splitlines() if line.startswith("hf-distill")]
    assert len(errors) == 1 and "Traceback" not in printed, printed  # one line (progress bars aside), no traceback
    return exited.value.code, errors[0]


def train(tmp_path, teacher_dir, *flags):
    write_sentiment_rows(tmp_path / "train.csv", 16)
    return [
        *("train", "--teacher_model_name_or_path", str(teacher_dir), "--train_file", str(tmp_path / "train.csv")),
        *("--output_dir", str(tmp_path / "out"), "--report_to", "none", "--use_cpu", "true", *flags),
    ]


# ---- width pruning --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, code, message",
    [
        (
            ["--student_num_heads", "0"],
            2,
            r"student_num_heads must be a whole number >= 1 \(--student_num_heads\), got 0$",
        ),
        (["--student_intermediate_size", "-4"], 2, r"student_intermediate_size must be a whole number >= 1 \(--stud"),
        (["--student_num_heads", "8", "--student_hidden_size", "64"], 1, r"heads=8 is out of range: the teacher ha"),
        (["--student_intermediate_size", "99"], 1, r"intermediate_size=99 is out of range: the teacher has 37, keep "),
        (["--student_num_heads", "3"], 1, r"keeping 3 heads of size 8 needs hidden_size=24, got 32: give hidden_si"),
        (["--student_hidden_size", "30"], 1, r"needs hidden_size=32, got 30: .* \(a multiple of the head size 8\)$"),
    ],
    ids=["heads-0", "neurons-negative", "more-heads", "more-neurons", "heads-not-dividing", "hidden-not-dividing"],
)
def test_bad_widths_are_refused_before_the_data_is_read(
    tmp_path, teacher_dir, capsys, before_the_data, flags, code, message
):
    exit_code, line = refusal(train(tmp_path, teacher_dir, *flags), capsys)
    prefix = "hf-distill train: error: " if code == 2 else "hf-distill: error: "
    assert exit_code == code and line.startswith(prefix) and re.search(message, line), line
    assert not (tmp_path / "out").exists()


# ---- sampled caches -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, code, message",
    [
        (["--logit_samples", "0"], 2, r"logit_samples must be a whole number >= 1 \(--logit_samples\), got 0$"),
        (["--logit_samples", "-8"], 2, r"logit_samples must be a whole number >= 1 \(--logit_samples\), got -8$"),
        (["--logit_samples", "8", "--top_k", "4"], 2, r"top_k=4 and logit_samples=8 are two ways of keeping part of"),
        (
            ["--logit_samples", "8", "--divergence", "jsd"],
            1,
            r"logit_samples=8 stores sampled frequencies, whose gradient is unbiased for the forward KL only, but the "
            r"recipe's divergence is 'jsd': use divergence='forward_kl', or build a top-k cache \(--top_k\)$",
        ),
    ],
    ids=["zero", "negative", "with-top-k", "with-jsd"],
)
def test_bad_sampled_cache_settings_are_refused_before_the_teacher_runs(
    tmp_path, teacher_dir, capsys, monkeypatch, flags, code, message
):
    import hf_distill.run as run

    monkeypatch.setattr(run, "_prepare", lambda *a, **k: pytest.fail("the teacher was loaded before the refusal"))
    write_sentiment_rows(tmp_path / "train.csv", 16)
    argv = ["cache", "--teacher_model_name_or_path", str(teacher_dir), "--train_file", str(tmp_path / "train.csv")]
    argv += ["--cache_dir", str(tmp_path / "cache"), "--output_dir", str(tmp_path / "out"), "--report_to", "none"]
    exit_code, line = refusal([*argv, *flags], capsys)
    prefix = "hf-distill cache: error: " if code == 2 else "hf-distill: error: "
    assert exit_code == code and line.startswith(prefix) and re.search(message, line), line
    assert not (tmp_path / "cache").exists()


# ---- --augment ------------------------------------------------------------------------------------------------------


def test_augment_for_a_task_that_cannot_use_it_is_refused_before_the_data_is_read(tmp_path, capsys, before_the_data):
    from tiny_task_models import token_classifier

    folder = tmp_path / "tagger"
    token_classifier(num_layers=2, vocab_size=VOCAB).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    exit_code, line = refusal(train(tmp_path, folder, "--augment", "2"), capsys)
    assert exit_code == 1 and re.match(r"hf-distill: error: --augment 2: .*; leave out --augment$", line), line


def test_augment_without_whole_word_tokens_is_refused_before_the_data_is_read(tmp_path, capsys, before_the_data):
    """A tokenizer of letters and word pieces only: no word can be replaced by another."""
    pieces = [*"abcdefghijklmnopqrstuvwxyz", *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
    folder = tmp_path / "pieces"
    classifier(num_layers=2, vocab_size=len(pieces) + 5).save_pretrained(folder)
    tiny_tokenizer(pieces).save_pretrained(folder)
    exit_code, line = refusal(train(tmp_path, folder, "--augment", "2"), capsys)
    assert exit_code == 1 and re.match(
        r"hf-distill: error: --augment 2: words are replaced by other words that the teacher's tokenizer reads as one "
        r"token, but its 57 tokens hold no such words \(sub-word or byte pieces only\); leave out --augment, or pass "
        r"--augment_replace_prob 0 \(word drops and span swaps only\)$",
        line,
    ), line


def test_augment_with_a_teacher_without_input_embeddings_is_refused():
    from hf_distill.augment import check_augmentable
    from hf_distill.data import DataArguments
    from hf_distill.tasks import task_for

    teacher = classifier(num_layers=2, vocab_size=VOCAB)
    teacher.get_input_embeddings = lambda: None  # e.g. a model fed inputs_embeds by a wrapper of its own
    args = DataArguments(train_file="train.csv", augment=2)
    with pytest.raises(ValueError) as error:
        check_augmentable(args, task_for(teacher), tiny_tokenizer(), teacher)
    assert str(error.value) == (
        "--augment 2: words are replaced by their nearest neighbours in the teacher's input embeddings, but "
        "BertForSequenceClassification has no input-embedding matrix; leave out --augment, or pass "
        "--augment_replace_prob 0 (word drops and span swaps only)"
    )
    check_augmentable(
        DataArguments(train_file="train.csv", augment=2, augment_replace_prob=0.0),
        task_for(teacher),
        tiny_tokenizer(),
        teacher,
    )


# ---- on-policy ------------------------------------------------------------------------------------------------------


def test_on_policy_without_an_end_of_sequence_token_is_refused_at_start_up(tmp_path):
    from datasets import Dataset

    from hf_distill import DistillationTrainer

    student, teacher = llama(num_layers=1, seed=1), llama(num_layers=2)
    for model in (student, teacher):
        model.config.eos_token_id = model.generation_config.eos_token_id = None
    rows = Dataset.from_list(random_task_rows("causal-lm", 8))
    with pytest.raises(ValueError) as error:
        DistillationTrainer(
            model=student, teacher_model=teacher, args=make_config(tmp_path, lmbda=0.5), train_dataset=rows,
            data_collator=pad_batch,
        )  # fmt: skip
    assert str(error.value) == (
        "on-policy / sequence-level distillation (lmbda=0.5) ends each completion at the end-of-sequence token, but "
        "neither the tokenizer, nor the model's config or generation config names one: every completion would run to "
        "max_new_tokens and the student would learn never to stop. Give the tokenizer an eos_token, or set "
        "model.generation_config.eos_token_id"
    )
    tokenizer = tiny_tokenizer()
    tokenizer.eos_token = "[SEP]"  # the tokenizer's end-of-sequence token serves
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=make_config(tmp_path, lmbda=0.5), train_dataset=rows,
        data_collator=pad_batch, processing_class=tokenizer,
    )  # fmt: skip
    assert trainer.completions.generation_config.eos_token_id == tokenizer.eos_token_id


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("lmbda", "-0.1", r"lmbda must be a number in \[0, 1\], got -0.1$"),
        ("lmbda", "nan", r"lmbda must be a number in \[0, 1\], got nan$"),
        ("max_new_tokens", "0", r"max_new_tokens must be a whole number >= 1, got 0$"),
        ("top_p", "1.5", r"top_p must be a number in \(0, 1\], got 1.5$"),
        ("generation_temperature", "-1", r"generation_temperature must be a number >= 0, got -1.0$"),
        ("divergence_beta", "inf", r"divergence_beta must be a number in \[0, 1\], got inf$"),
        ("divergence_alpha", "-0.1", r"divergence_alpha must be a number in \[0, 1\), got -0.1$"),
        ("divergence_alpha", "nan", r"divergence_alpha must be a number in \[0, 1\), got nan$"),
        ("temperature", "0", r"temperature must be > 0, got 0.0; try 1.0 to 4.0"),
        ("loss_chunk_size", "0", r"loss_chunk_size must be a whole number of positions >= 1 \(e.g. 1024\), or unset"),
    ],
)
def test_out_of_range_on_policy_and_divergence_flags_are_usage_errors(tmp_path, capsys, flag, value, message):
    write_corpus(tmp_path / "train.txt", 8)
    argv = [
        "train",
        "--teacher_model_name_or_path",
        str(tmp_path / "unused"),
        "--train_file",
        str(tmp_path / "train.txt"),
    ]
    exit_code, line = refusal([*argv, "--output_dir", str(tmp_path / "out"), f"--{flag}", value], capsys)
    assert exit_code == 2 and re.match(r"hf-distill train: error: " + message, line), line
