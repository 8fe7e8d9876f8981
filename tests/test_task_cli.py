"""`hf-distill train` end to end for each of the six cases, on tiny saved teachers and local files; and the same card
from the Python API (`measure_distillation`, `trainer.create_model_card()` after `trainer.evaluate()`)."""

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import WORDS, tiny_bert, tiny_tokenizer, write_sentiment_rows
from tiny_task_models import (
    TAGS,
    bert_config,
    corpus_sentence,
    gpt2,
    llama,
    masked_lm,
    question_answerer,
    regressor,
    token_classifier,
)
from transformers import AutoModelForCausalLM, BertModel

from hf_distill import DistillationConfig, DistillationTrainer, build_student, load_model, measure_distillation
from hf_distill.cli import main
from hf_distill.data import DataArguments, load_raw_datasets
from hf_distill.measure import METRICS_FILE
from hf_distill.tasks import task_for

REPO = Path(__file__).resolve().parents[1]


def _classifier(vocab_size):
    return tiny_bert(num_layers=4, seed=0, vocab_size=vocab_size)


def _regressor(vocab_size):
    return regressor(num_layers=4, vocab_size=vocab_size)  # the tokenizer's vocabulary (checked at start-up)


def _tiny(build):
    return lambda vocab_size: build(num_layers=4, vocab_size=vocab_size)


# case -> teacher builder, data kind, whether a transfer set (unlabelled file) is given, the card's metric rows, the
# model-index metric types, the metrics every model gets in the metrics file
CASES = {
    "text-classification": (
        _classifier,
        "sentiment",
        True,
        ("Accuracy", "Macro-F1"),
        {"accuracy", "f1"},
        ("accuracy", "macro_f1"),
    ),
    "regression": (_regressor, "score", False, ("MSE", "Pearson correlation"), {"mse", "pearsonr"}, ("mse",)),
    "token-classification": (
        _tiny(token_classifier),
        "tags",
        False,
        ("Entity F1", "Entity precision", "Entity recall"),
        {"f1", "precision", "recall", "accuracy"},
        ("f1", "precision", "accuracy"),
    ),
    "question-answering": (
        _tiny(question_answerer),
        "squad",
        False,
        ("Exact match", "F1"),
        {"exact_match", "f1"},
        ("exact_match", "f1"),
    ),
    "fill-mask": (_tiny(masked_lm), "text", True, ("Perplexity",), {"perplexity", "accuracy"}, ("perplexity",)),
    "text-generation-gpt2": (_tiny(gpt2), "text", True, ("Perplexity",), {"perplexity", "accuracy"}, ("perplexity",)),
    "text-generation-llama": (
        _tiny(llama),
        "text",
        False,
        ("Perplexity",),
        {"perplexity", "accuracy"},
        ("perplexity",),
    ),
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_rows(path, kind, count, seed):
    """`count` rows of the data `kind` as JSON Lines; `unlabeled` rows keep only the inputs."""
    rng = random.Random(seed)
    if kind == "sentiment":
        return str(write_sentiment_rows(path, count, seed=seed))
    rows = []
    for _ in range(count):
        sentence = corpus_sentence(rng)
        if kind == "tags":
            tokens = sentence.split()
            rows.append({"tokens": tokens, "ner_tags": [rng.choice(list(TAGS.values())) for _ in tokens]})
        elif kind == "squad":
            answer = rng.choice(sentence.split())
            start = f" {sentence} ".index(f" {answer} ")
            question = " ".join(rng.choice(WORDS) for _ in range(3))
            rows.append(
                {"question": question, "context": sentence, "answers": {"text": [answer], "answer_start": [start]}}
            )
        elif kind == "score":
            rows.append({"text": sentence, "label": rng.uniform(-1, 1)})
        else:
            rows.append({"text": sentence})
    Path(path).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def save_teacher(folder, case):
    tokenizer = tiny_tokenizer()
    CASES[case][0](len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def data_files(tmp_path, case):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    kind, transfer = CASES[case][1], CASES[case][2]
    files = {
        "train_file": write_rows(data / "train.jsonl", kind, 40, seed=1),
        "validation_file": write_rows(data / "validation.jsonl", kind, 12, seed=2),
        "test_file": write_rows(data / "test.jsonl", kind, 10, seed=3),
    }
    if transfer:  # texts without labels, none of them in the evaluation data (which would drop it)
        rng = random.Random(4)
        rows = [{"text": " ".join(rng.choice(WORDS) for _ in range(8))} for _ in range(8)]
        (data / "unlabeled.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        files["unlabeled_file"] = str(data / "unlabeled.jsonl")
    return files


def train_flags(tmp_path, teacher, case, output="student"):
    flags = ["--teacher_model_name_or_path", str(teacher), "--output_dir", str(tmp_path / output)]
    for name, path in data_files(tmp_path, case).items():
        flags += [f"--{name}", path]
    return flags + [
        *("--max_steps", "3", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3"),
        *("--report_to", "none", "--use_cpu", "--save_strategy", "no", "--disable_tqdm", "true"),
        *("--latency_batch_size", "2", "--latency_sequence_length", "8"),
    ]


def split_card(text):
    front, body = re.match(r"^---\n(.*?)\n---\n(.*)$", text, flags=re.S).groups()
    return yaml.safe_load(front), body


def table_rows(body):
    rows = {}
    for line in body.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def check_card(folder, case, eval_file="test.jsonl"):
    """The card's table and model-index carry the task's own metrics, measured on the file named."""
    _, _, transfer, rows, index_types, _ = CASES[case]
    meta, body = split_card((folder / "README.md").read_text())
    table = table_rows(body)
    for label in rows:
        assert label in table and table[label][1] != "–", (label, table.get(label))
    assert "No evaluation results were recorded" not in body
    (result,) = meta["model-index"][0]["results"]
    assert {metric["type"] for metric in result["metrics"]} == index_types
    assert result["dataset"]["name"] == eval_file and "train" not in result["dataset"]["name"]
    assert f"**Evaluation data:** `{eval_file}`" in body and f"examples of `{eval_file}`" in body
    return meta, table, body


@pytest.mark.parametrize("case", list(CASES))
def test_train_each_task_end_to_end(tmp_path, case):
    """Replaces test_task_cli.test_train_each_task_end_to_end (four tasks) and test_cli's text-classification card
    checks: every case, with its card's metrics, evaluation file and labelled / unlabelled counts."""
    teacher = save_teacher(tmp_path / "teacher", case)
    flags = train_flags(tmp_path, teacher, case)
    if case == "fill-mask":  # DistilBERT's triple loss; the other cases infer the task from the teacher
        flags += ["--task", "fill-mask", "--hidden_weight", "1", "--hidden_loss_type", "cosine"]
    main(["train", *flags])

    folder = tmp_path / "student"
    task = task_for(load_model(teacher))
    student, info = task.auto_class.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert student.config.num_hidden_layers == 2 and student.config.distillation_teacher_layers == [0, 2]
    assert (folder / "tokenizer_config.json").is_file()

    metrics = json.loads((folder / METRICS_FILE).read_text())
    assert metrics["task"] == task.pipeline_tag
    dataset = metrics["dataset"]
    assert dataset["eval_split"] == "test" and dataset["eval_file"] == "test.jsonl" and dataset["eval_examples"] == 10
    assert dataset["train_examples"] == 40 and dataset.get("unlabeled_examples") == (8 if CASES[case][2] else None)
    for role in ("teacher", "student"):
        for key in (*CASES[case][5], "parameters", "latency_ms_per_batch"):
            assert isinstance(metrics[role][key], (int, float)), (role, key)
    if case != "regression":  # argmax agreement and KL need classes
        assert 0 <= metrics["student"]["teacher_agreement"] <= 1 and metrics["student"]["teacher_kl"] >= 0
    assert metrics["student"]["parameters"] < metrics["teacher"]["parameters"]
    if "perplexity" in metrics["student"]:
        assert metrics["teacher"]["perplexity"] > 1
    if case == "token-classification":
        assert student.config.id2label == TAGS

    _, _, body = check_card(folder, case)
    expected = "40 labelled, plus 8 unlabelled (a transfer set" if CASES[case][2] else "**Training examples:** 40\n"
    assert expected in body


@pytest.mark.parametrize("case", ["text-classification", "regression", "question-answering", "text-generation-gpt2"])
def test_python_api_writes_the_commands_card(tmp_path, case):
    """measure_distillation after trainer.train() gives the card the command gives; create_model_card() after
    trainer.evaluate() shows the evaluation (it used to say "No evaluation results were recorded")."""
    teacher_folder = save_teacher(tmp_path / "teacher", case)
    files = data_files(tmp_path, case)
    files.pop("unlabeled_file", None)
    teacher = load_model(teacher_folder)
    tokenizer = tiny_tokenizer()
    task = task_for(teacher)
    data_args = DataArguments(**files)
    datasets = task.prepare_datasets(load_raw_datasets(data_args), tokenizer, data_args, None, teacher.config)
    args = DistillationConfig(
        output_dir=str(tmp_path / "python"),
        max_steps=3,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(
        model=build_student(teacher, num_layers=2, strategy="every_other"),
        teacher_model=teacher,
        args=args,
        train_dataset=datasets["train"],
        data_collator=task.data_collator(tokenizer),
        processing_class=tokenizer,
    )
    train_result = trainer.train()
    trainer.save_model()

    if case != "regression":
        # The Python user's card from trainer.evaluate(): the agreement with the teacher, never "no results".
        trainer.evaluate(datasets["test"])
        trainer.create_model_card()
        _, body = split_card((tmp_path / "python" / "README.md").read_text())
        assert "No evaluation results were recorded" not in body
        assert table_rows(body)["Agreement with the teacher"][1].endswith("%")

    # measure_distillation: the task's metrics for both models, the metrics file and the card.
    metrics = measure_distillation(
        trainer,
        datasets["test"],
        dataset={"name": "train.jsonl", "eval_split": "test", "eval_file": "test.jsonl", "train_examples": 40},
        train_result=train_result,
    )
    assert json.loads((tmp_path / "python" / METRICS_FILE).read_text()) == metrics
    _, table, _ = check_card(tmp_path / "python", case)

    main(["train", *train_flags(tmp_path, teacher_folder, case, output="command")])
    _, command_table, _ = check_card(tmp_path / "command", case)
    assert list(table) == list(command_table)  # the same rows (results, losses, training), in the same order


def test_student_command_builds_a_student_of_any_task(tmp_path):
    teacher = save_teacher(tmp_path / "teacher", "text-generation-llama")
    main(["student", "--teacher_model_name_or_path", str(teacher), "--output_dir", str(tmp_path / "s")])
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    assert type(student).__name__ == "LlamaForCausalLM" and student.config.num_hidden_layers == 2


def test_a_teacher_without_a_task_head_needs_the_task(tmp_path):
    folder = tmp_path / "bare"
    BertModel(bert_config(2)).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    with pytest.raises(ValueError, match="cannot tell the task of the teacher .* from its architecture BertModel"):
        main(["train", *train_flags(tmp_path, folder, "fill-mask")])


def test_unknown_task_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'translation'"):
        main(["train", *train_flags(tmp_path, tmp_path, "fill-mask"), "--task", "translation"])


def test_token_classification_tags_must_be_the_teachers(tmp_path):
    teacher = save_teacher(tmp_path / "teacher", "token-classification")
    flags = train_flags(tmp_path, teacher, "token-classification")
    rows = tmp_path / "data" / "train.jsonl"
    rows.write_text(json.dumps({"tokens": ["the", "movie"], "ner_tags": ["B-ORG", "O"]}) + "\n")
    with pytest.raises(ValueError, match="tag 'B-ORG' of column 'ner_tags' is not one of the teacher's labels"):
        main(["train", *flags])


def test_the_example_script_runs_the_same_code_for_any_task(tmp_path):
    """Replaces test_task_script_runs_the_same_code (scripts/distill_causal_lm.py): one script for every task."""
    teacher = save_teacher(tmp_path / "teacher", "text-generation-gpt2")
    flags = train_flags(tmp_path, teacher, "text-generation-gpt2")
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "distill.py"), *flags, "--measure_latency", "false"],
        capture_output=True,
        text=True,
        timeout=300,
        # This checkout's hf_distill, not an installed one.
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "student" / METRICS_FILE).read_text())
    assert metrics["task"] == "text-generation" and "latency" not in metrics
    assert "Student saved to" in result.stdout and "Perplexity" in result.stdout
