"""The model card: metadata for the Hub, and a body whose every figure comes from the metrics or config.json."""

import contextlib
import io
import json
import re

import pytest
from tiny_task_models import LABELS, regressor, split_card, table_rows, tiny_bert, tiny_tokenizer, token_classifier

from hf_distill.model_card import METRICS_FILE, build_model_card, template_path

pytestmark = pytest.mark.timeout(60)

TEACHER = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def student_dir(tmp_path):
    """A saved tiny student (2 layers, hidden 32) with a word-level tokenizer."""
    folder = tmp_path / "student"
    tokenizer = tiny_tokenizer()
    tiny_bert(num_layers=2, seed=0, vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def full_metrics():
    return {
        "task": "text-classification",
        "dataset": {"name": "tweet_eval", "train_examples": 8000, "eval_split": "test", "eval_examples": 2000},
        "teacher": {
            "name_or_path": TEACHER,
            "num_layers": 4,
            "hidden_size": 32,
            "parameters": 22_700_000,
            "size_bytes": 90_000_000,
            "latency_ms_per_batch": 120.0,
            "accuracy": 0.7745,
            "macro_f1": 0.757,
        },
        "student": {
            "num_layers": 2,
            "hidden_size": 32,
            "parameters": 11_000_000,
            "size_bytes": 45_000_000,
            "latency_ms_per_batch": 48.0,
            "accuracy": 0.761,
            "macro_f1": 0.742,
            "teacher_agreement": 0.9,
            "teacher_layers": [0, 2],
        },
        "baseline": {
            "num_layers": 2,
            "hidden_size": 32,
            "parameters": 11_000_000,
            "size_bytes": 45_000_000,
            "latency_ms_per_batch": 50.0,
            "accuracy": 0.7515,
            "macro_f1": 0.731,
        },
        "latency": {"batch_size": 32, "sequence_length": 64, "threads": 2, "device": "cpu"},
        "distillation": {
            "temperature": 2.0,
            "kd_weight": 0.5,
            "label_weight": 0.5,
            "logit_mse_weight": 0.0,
            "hidden_weight": 1.5,
            "hidden_loss_type": "cosine",
            "attention_weight": 0.0,
            "attention_loss_type": "kl",
            "layer_map": "2:1,4:2",
        },
        "training": {
            "num_train_epochs": 2,
            "learning_rate": 5e-5,
            "per_device_train_batch_size": 32,
            "gradient_accumulation_steps": 1,
            "seed": 0,
            "train_runtime_s": 400.0,
        },
        "framework_versions": {
            "hf_distill": "0.1.0",
            "transformers": "5.23.0",
            "torch": "2.13.0",
            "datasets": "5.2.0",
        },
    }


def test_template_ships_beside_the_code():
    path = template_path()
    assert path.name == "student.md" and path.parent.name == "model_cards"
    assert "{{ card_data }}" in path.read_text(encoding="utf-8")


def test_metadata(student_dir):
    card = build_model_card(str(student_dir), full_metrics(), license="apache-2.0", language=["en", "fr"])
    meta, _ = split_card(card)

    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["license"] == "apache-2.0"
    assert meta["language"] == ["en", "fr"]
    assert meta["base_model"] == TEACHER  # the teacher, not the student
    assert meta["datasets"] == ["tweet_eval"]
    assert {"distillation", "hf-distill", "knowledge-distillation"} <= set(meta["tags"])

    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    assert result["task"]["type"] == "text-classification"
    assert result["dataset"]["name"] == "tweet_eval" and result["dataset"]["split"] == "test"
    values = {metric["type"]: metric["value"] for metric in result["metrics"]}
    assert values == {"accuracy": 0.761, "f1": 0.742}
    f1 = next(metric for metric in result["metrics"] if metric["type"] == "f1")
    assert f1["args"] == {"average": "macro"}


def test_body_figures_come_from_the_metrics(student_dir):
    _, body = split_card(build_model_card(str(student_dir), full_metrics()))
    rows = table_rows(body)

    # Teacher / student / baseline columns, formatted from the inputs.
    assert rows["Accuracy"] == ["77.45%", "76.10%", "75.15%"]
    assert rows["Macro-F1"] == ["75.70%", "74.20%", "73.10%"]
    assert rows["Agreement with the teacher"] == ["–", "90.00%", "–"]
    assert rows["Parameters"] == ["22.7M", "11.0M", "11.0M"]
    assert rows["Size on disk"] == ["90.0 MB", "45.0 MB", "45.0 MB"]
    assert rows["Latency per batch"] == ["120.0 ms", "48.0 ms", "50.0 ms"]
    assert rows["Speed-up vs. teacher"] == ["1.00×", "2.50×", "2.40×"]  # 120 / 48 and 120 / 50
    assert rows["Transformer layers"] == ["4", "2", "2"]
    assert "batches of 32, sequence length 64, 2 threads, on cpu" in body
    # A baseline's figures without a comparison: the table shows them, but no gain is stated (a gain comes only with
    # its budget, its p-value and its seeds, in the comparison's verdict).
    assert "+0.95 points" not in body and "Distillation changes" not in body

    # How the student was built, and how it was trained.
    assert "student layers 0, 1 start from teacher layers 0, 2" in body
    assert "`BertForSequenceClassification`, 2 transformer layers, hidden size 32" in body  # from config.json
    assert "`negative`, `neutral`, `positive`" in body
    assert "temperature T = 2" in body
    assert rows["Hidden-state loss (cosine) on the mapped layers"] == ["1.5"]
    assert "Mean squared error between student and teacher logits" not in body  # weight 0: not a term of the loss
    assert rows["2"] == ["1"] and rows["4"] == ["2"]  # the layer map
    assert rows["Learning rate"] == ["5e-05"] and rows["Training time"] == ["400 s (6.7 min)"]
    assert "**Training examples:** 8000" in body
    assert "- Transformers 5.23.0" in body and "- PyTorch 2.13.0" in body

    # Citations, and nothing unknown printed.
    assert "arXiv:1503.02531" in body and "Distilling the Knowledge in a Neural Network" in body
    assert "arXiv:1910.01108" in body and "smaller, faster, cheaper and lighter" in body
    assert "None" not in str(body) and "nan" not in body


def test_latency_and_speed_up_come_with_their_spread(student_dir):
    """Measured in interleaved rounds (measure.add_latencies), each latency has its interquartile range and the
    speed-up is the median of the per-round ratios with its own: the card prints both, and says what they are."""
    metrics = full_metrics()
    metrics["teacher"]["latency_iqr_ms"] = [118.5, 123.25]
    metrics["student"].update(latency_iqr_ms=[47.04, 49.5], speedup={"median": 2.497, "iqr": [2.41, 2.6]})
    _, body = split_card(build_model_card(str(student_dir), metrics))
    rows = table_rows(body)
    assert rows["Latency per batch"] == ["120.0 ms (IQR 118.5–123.2)", "48.0 ms (IQR 47.0–49.5)", "50.0 ms"]
    assert rows["Speed-up vs. teacher"] == ["1.00×", "2.50× (IQR 2.41–2.60)", "2.40×"]
    assert "It runs 2.50× (IQR 2.41–2.60) faster than the teacher" in body
    assert "IQR is the interquartile range over the rounds" in body


def test_metrics_file_is_read_by_default(student_dir):
    (student_dir / METRICS_FILE).write_text(json.dumps(full_metrics()), encoding="utf-8")
    meta, body = split_card(build_model_card(str(student_dir)))
    assert meta["base_model"] == TEACHER
    assert table_rows(body)["Accuracy"] == ["77.45%", "76.10%", "75.15%"]


def test_no_metrics_renders_without_numbers(student_dir):
    card = build_model_card(str(student_dir))
    meta, body = split_card(card)
    assert "None" not in str(card)
    assert "model-index" not in meta and "base_model" not in meta and "datasets" not in meta
    assert meta["pipeline_tag"] == "text-classification"  # from config.json's architecture
    number_rows = [line for line in body.splitlines() if line.startswith("|") and re.search(r"\d", line)]
    assert number_rows == []
    assert "No evaluation results were recorded" in body
    assert "## Distillation" not in body and "## Training procedure" not in body


def test_partial_metrics_leave_out_unknown_rows(student_dir):
    metrics = {"teacher": {"name_or_path": TEACHER}, "student": {"accuracy": 0.5}}
    _, body = split_card(build_model_card(str(student_dir), metrics))
    rows = table_rows(body)
    assert rows["Accuracy"] == ["–", "50.00%"]
    assert not {"Latency per batch", "Speed-up vs. teacher", "Parameters", "Macro-F1"} & set(rows)
    assert "None" not in body and "Latency is" not in body


def test_overrides_local_teacher_and_data_file(student_dir, tmp_path):
    local_teacher = tmp_path / "my-teacher"
    local_teacher.mkdir()
    card = build_model_card(
        str(student_dir),
        full_metrics(),
        teacher_name=str(local_teacher),
        dataset_name="tweets.csv",
        distillation={"temperature": 4.0},
    )
    meta, body = split_card(card)
    # A local path or a data file is not a Hub id: not linked from the metadata, but named in the body.
    assert "base_model" not in meta and "datasets" not in meta
    assert meta["model-index"][0]["results"][0]["dataset"]["name"] == "tweets.csv"
    assert "`my-teacher` (a local checkpoint)" in body and str(local_teacher) not in body
    assert "temperature T = 4" in body


def test_pipeline_tag_and_usage_follow_the_head(tmp_path):
    folder = tmp_path / "tagger"
    token_classifier(num_layers=2).save_pretrained(folder)
    meta, body = split_card(build_model_card(str(folder), model_id="someone/tiny-tagger"))
    assert meta["pipeline_tag"] == "token-classification"
    assert 'pipeline("token-classification", model="someone/tiny-tagger")' in body
    assert body.startswith("\n# tiny-tagger")


def test_usage_snippet_runs(student_dir):
    _, body = split_card(build_model_card(str(student_dir), full_metrics()))
    (snippet,) = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    assert f'model="{student_dir}"' in snippet
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(snippet, "usage-snippet", "exec"), {})
    assert output.getvalue().strip().startswith("[{'label': ")
    assert any(label in output.getvalue() for label in LABELS.values())


# Each task's own metrics: (task in the metrics file, student figures, table rows as shown, model-index types)
TASK_CARDS = {
    "question-answering": (
        {"exact_match": 0.5, "f1": 0.625},
        {"Exact match": "50.00%", "F1": "62.50%"},
        {"exact_match", "f1"},
    ),
    "token-classification": (
        {"f1": 0.8, "precision": 0.75, "recall": 0.9, "accuracy": 0.95},
        {"Entity F1": "80.00%", "Entity precision": "75.00%", "Entity recall": "90.00%"},
        {"f1", "precision", "recall", "accuracy"},
    ),
    "fill-mask": ({"perplexity": 12.3456, "accuracy": 0.4}, {"Perplexity": "12.35"}, {"perplexity", "accuracy"}),
    "text-generation": ({"perplexity": 40.0, "accuracy": 0.2}, {"Perplexity": "40"}, {"perplexity", "accuracy"}),
}


@pytest.mark.parametrize("task", list(TASK_CARDS))
def test_each_task_shows_its_own_metrics(student_dir, task):
    figures, rows, index_types = TASK_CARDS[task]
    metrics = {
        "task": task,
        "dataset": {"name": "train.jsonl", "eval_split": "test", "eval_file": "test.jsonl", "eval_examples": 10},
        "teacher": {"name_or_path": TEACHER, **figures},
        "student": dict(figures),
    }
    meta, body = split_card(build_model_card(str(student_dir), metrics))
    table = table_rows(body)
    for label, shown in rows.items():
        assert table[label] == [shown, shown], label
    assert "Accuracy" not in table and "No evaluation results were recorded" not in body
    (result,) = meta["model-index"][0]["results"]
    assert result["task"]["type"] == meta["pipeline_tag"] == task
    assert {metric["type"] for metric in result["metrics"]} == index_types


def test_regression_card_shows_mse_and_pearson(tmp_path):
    folder = tmp_path / "regressor"
    regressor(num_layers=2, problem_type="regression").save_pretrained(folder)
    metrics = {
        "task": "text-classification",
        "dataset": {"name": "scores.csv", "eval_split": "validation", "eval_file": "validation.csv"},
        "student": {"mse": 0.0312, "pearson": 0.91},
    }
    meta, body = split_card(build_model_card(str(folder), metrics))
    table = table_rows(body)
    assert table["MSE"] == ["–", "0.0312"] and table["Pearson correlation"] == ["–", "0.91"]
    assert "Accuracy" not in table
    types = {metric["type"] for metric in meta["model-index"][0]["results"][0]["metrics"]}
    assert types == {"mse", "pearsonr"}


def test_local_files_name_the_evaluation_file_and_count_the_transfer_set_apart(student_dir):
    metrics = full_metrics()
    metrics["dataset"] = {
        "name": "train.csv",
        "train_examples": 48,
        "unlabeled_examples": 32,
        "eval_split": "test",
        "eval_file": "test.csv",
        "eval_examples": 16,
    }
    meta, body = split_card(build_model_card(str(student_dir), metrics))
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["name"] == "test.csv" and result["dataset"]["type"] == "test.csv"
    assert "train.csv" not in json.dumps(meta) and "datasets" not in meta
    assert "**Training data:** `train.csv`" in body and "**Evaluation data:** `test.csv`" in body
    assert "Measured on 16 examples of `test.csv`." in body
    assert "**Training examples:** 48 labelled, plus 32 unlabelled" in body
