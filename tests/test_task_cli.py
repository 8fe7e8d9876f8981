"""`hf-distill train` end to end for each of the six cases, on tiny saved teachers and local files; and the same card
from the Python API (`measure_distillation`, `trainer.create_model_card()` after `trainer.evaluate()`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_task_models import (
    CASE_IDS,
    CASES,
    TAGS,
    bert_config,
    case,
    data_files,
    save_teacher,
    split_card,
    table_rows,
    tiny_tokenizer,
    train_flags,
)
from transformers import AutoModelForCausalLM, BertModel

from hf_distill import DistillationConfig, DistillationTrainer, build_student, load_model, measure_distillation
from hf_distill.cli import main, run_command
from hf_distill.data import DataArguments, load_raw_datasets
from hf_distill.model_card import METRICS_FILE
from hf_distill.tasks import task_for

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def check_card(folder, task_case, eval_file="test.jsonl"):
    """The card's table and model-index carry the task's own metrics, measured on the file named."""
    meta, body = split_card((folder / "README.md").read_text())
    table = table_rows(body)
    for label in task_case.card_rows:
        assert label in table and table[label][1] != "–", (label, table.get(label))
    assert "No evaluation results were recorded" not in body
    (result,) = meta["model-index"][0]["results"]
    assert {metric["type"] for metric in result["metrics"]} == task_case.model_index_types
    assert result["dataset"]["name"] == eval_file and "train" not in result["dataset"]["name"]
    assert f"**Evaluation data:** `{eval_file}`" in body and f"examples of `{eval_file}`" in body
    return meta, table, body


@pytest.mark.parametrize("task_case", CASES, ids=CASE_IDS)
def test_train_each_task_end_to_end(tmp_path, task_case):
    """Replaces test_task_cli.test_train_each_task_end_to_end (four tasks) and test_cli's text-classification card
    checks: every case, with its card's metrics, evaluation file and labelled / unlabelled counts."""
    teacher = save_teacher(tmp_path / "teacher", task_case)
    flags = train_flags(tmp_path, teacher, task_case)
    if task_case.id == "masked-lm":  # DistilBERT's triple loss; the other cases infer the task from the teacher
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
    assert dataset["train_examples"] == 40 and dataset.get("unlabeled_examples") == (
        8 if task_case.transfer_set else None
    )
    for role in ("teacher", "student"):
        for key in (*task_case.card_keys, "parameters", "latency_ms_per_batch"):
            assert isinstance(metrics[role][key], (int, float)), (role, key)
    if not task_case.is_regression:  # argmax agreement and KL need classes
        assert 0 <= metrics["student"]["teacher_agreement"] <= 1 and metrics["student"]["teacher_kl"] >= 0
    assert metrics["student"]["parameters"] < metrics["teacher"]["parameters"]
    if "perplexity" in metrics["student"]:
        assert metrics["teacher"]["perplexity"] > 1
    if task_case.id == "token-classification":
        assert student.config.id2label == TAGS

    _, _, body = check_card(folder, task_case)
    expected = (
        "40 labelled, plus 8 unlabelled (a transfer set" if task_case.transfer_set else "**Training examples:** 40\n"
    )
    assert expected in body


@pytest.mark.parametrize("case_id", ["text-classification", "regression", "question-answering", "causal-lm-gpt2"])
def test_python_api_writes_the_commands_card(tmp_path, case_id):
    """measure_distillation after trainer.train() gives the card the command gives; create_model_card() after
    trainer.evaluate() shows the evaluation (it used to say "No evaluation results were recorded")."""
    task_case = case(case_id)
    teacher_folder = save_teacher(tmp_path / "teacher", task_case)
    files = data_files(tmp_path, task_case)
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

    if not task_case.is_regression:
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
    _, table, _ = check_card(tmp_path / "python", task_case)

    main(["train", *train_flags(tmp_path, teacher_folder, task_case, output="command")])
    _, command_table, _ = check_card(tmp_path / "command", task_case)
    assert list(table) == list(command_table)  # the same rows (results, losses, training), in the same order


def test_student_command_builds_a_student_of_any_task(tmp_path):
    teacher = save_teacher(tmp_path / "teacher", case("causal-lm-llama"))
    main(["student", "--teacher_model_name_or_path", str(teacher), "--output_dir", str(tmp_path / "s")])
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    assert type(student).__name__ == "LlamaForCausalLM" and student.config.num_hidden_layers == 2


def test_a_teacher_without_a_task_head_needs_the_task(tmp_path):
    folder = tmp_path / "bare"
    BertModel(bert_config(2)).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    with pytest.raises(ValueError, match="cannot tell the task of the teacher .* from its architecture BertModel"):
        run_command(["train", *train_flags(tmp_path, folder, case("masked-lm"))])


def test_unknown_task_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # refused while parsing: a usage error
        run_command(["train", *train_flags(tmp_path, tmp_path, case("masked-lm")), "--task", "translation"])
    assert exit_info.value.code == 2 and "unknown task 'translation'" in capsys.readouterr().err


def test_token_classification_tags_must_be_the_teachers(tmp_path):
    teacher = save_teacher(tmp_path / "teacher", case("token-classification"))
    flags = train_flags(tmp_path, teacher, case("token-classification"))
    rows = tmp_path / "data" / "train.jsonl"
    rows.write_text(json.dumps({"tokens": ["the", "movie"], "ner_tags": ["B-ORG", "O"]}) + "\n")
    with pytest.raises(ValueError, match="tag 'B-ORG' of column 'ner_tags' is not one of the teacher's labels"):
        run_command(["train", *flags])


def test_the_example_script_runs_the_same_code_for_any_task(tmp_path):
    """Replaces test_task_script_runs_the_same_code (scripts/distill_causal_lm.py): one script for every task."""
    teacher = save_teacher(tmp_path / "teacher", case("causal-lm-gpt2"))
    flags = train_flags(tmp_path, teacher, case("causal-lm-gpt2"))
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
