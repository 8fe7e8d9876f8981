"""`hf-distill train` end to end for each task beyond text classification: tiny saved teachers, local files."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import WORDS, tiny_tokenizer
from tiny_task_models import (
    TAGS,
    bert_config,
    corpus_sentence,
    gpt2,
    llama,
    masked_lm,
    question_answerer,
    token_classifier,
)
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForTokenClassification,
    BertModel,
)

from hf_distill.cli import main
from hf_distill.pipeline import METRICS_FILE

REPO = Path(__file__).resolve().parents[1]

# task -> (teacher builder, auto class of the student, metrics every model gets)
TASKS = {
    "token-classification": (token_classifier, AutoModelForTokenClassification, ("f1", "precision", "accuracy")),
    "question-answering": (question_answerer, AutoModelForQuestionAnswering, ("exact_match", "f1")),
    "fill-mask": (masked_lm, AutoModelForMaskedLM, ("perplexity", "accuracy")),
    "text-generation-gpt2": (gpt2, AutoModelForCausalLM, ("perplexity", "accuracy")),
    "text-generation-llama": (llama, AutoModelForCausalLM, ("perplexity", "accuracy")),
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_rows(path, task, count, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        sentence = corpus_sentence(rng)
        if task == "token-classification":
            tokens = sentence.split()
            tags = [rng.choice(list(TAGS.values())) for _ in tokens]
            rows.append({"tokens": tokens, "ner_tags": tags})
        elif task == "question-answering":
            answer = rng.choice(sentence.split())
            start = f" {sentence} ".index(f" {answer} ")
            question = " ".join(rng.choice(WORDS) for _ in range(3))
            rows.append(
                {"question": question, "context": sentence, "answers": {"text": [answer], "answer_start": [start]}}
            )
        else:
            rows.append({"text": sentence})
    with open(path, "w") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def save_teacher(folder, name):
    build = TASKS[name][0]
    tokenizer = tiny_tokenizer()
    build(num_layers=4, vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_flags(tmp_path, teacher, task):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return [
        "--teacher_model_name_or_path",
        str(teacher),
        "--train_file",
        write_rows(data / "train.jsonl", task, 40, seed=1),
        "--validation_file",
        write_rows(data / "validation.jsonl", task, 12, seed=2),
        "--output_dir",
        str(tmp_path / "student"),
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "8",
        "--learning_rate",
        "1e-3",
        "--report_to",
        "none",
        "--use_cpu",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--latency_batch_size",
        "2",
        "--latency_sequence_length",
        "8",
    ]


@pytest.mark.parametrize("name", list(TASKS))
def test_train_each_task_end_to_end(tmp_path, name):
    task = name.removesuffix("-gpt2").removesuffix("-llama")
    _, auto_class, metric_names = TASKS[name]
    teacher = save_teacher(tmp_path / "teacher", name)
    flags = train_flags(tmp_path, teacher, task)
    if task == "fill-mask":  # DistilBERT's triple loss; the other tasks infer the task from the teacher
        flags += ["--task", "fill-mask", "--hidden_weight", "1", "--hidden_loss_type", "cosine"]
    main(["train", *flags])

    folder = tmp_path / "student"
    student, info = auto_class.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert student.config.num_hidden_layers == 2 and student.config.distillation_teacher_layers == [0, 2]
    assert (folder / "tokenizer_config.json").is_file() and (folder / "README.md").is_file()

    metrics = json.loads((folder / METRICS_FILE).read_text())
    assert metrics["task"] == task
    assert metrics["dataset"]["eval_split"] == "validation" and metrics["dataset"]["train_examples"] == 40
    for role in ("teacher", "student"):
        for key in (*metric_names, "parameters", "latency_ms_per_batch"):
            assert isinstance(metrics[role][key], (int, float)), (role, key)
    assert 0 <= metrics["student"]["teacher_agreement"] <= 1
    assert metrics["student"]["parameters"] < metrics["teacher"]["parameters"]
    if "perplexity" in metric_names:
        assert metrics["teacher"]["perplexity"] > 1
    if task == "token-classification":
        assert student.config.id2label == TAGS


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


def test_task_script_runs_the_same_code(tmp_path):
    teacher = save_teacher(tmp_path / "teacher", "text-generation-gpt2")
    flags = train_flags(tmp_path, teacher, "text-generation")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "distill_causal_lm.py"), *flags, "--measure_latency", "false"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "student" / METRICS_FILE).read_text())
    assert metrics["task"] == "text-generation" and "latency" not in metrics
