"""`compress` and `hf-distill compress`: one folder per export, measured, carded, loadable as the card says."""

import contextlib
import copy
import io
import json
import re

import pytest
import torch
from tiny_task_models import (
    pad_collate,
    random_classification_dataset,
    split_card,
    tiny_bert,
    tiny_tokenizer,
    vocab_tokenizer,
    write_sentiment_rows,
)

from hf_distill import build_student
from hf_distill.compress import COMPRESSION_FILE, TRADEOFF_PLOT, compress


@pytest.fixture
def folders(tmp_path):
    tokenizer = vocab_tokenizer()  # the student's tokenizer is checked against its embeddings
    teacher = tiny_bert(num_layers=4)
    teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    student = build_student(teacher, num_layers=2)
    student.save_pretrained(tmp_path / "student")
    tokenizer.save_pretrained(tmp_path / "student")
    return tmp_path


def run(folders, out="out", **kwargs):
    settings = {"teacher": str(folders / "teacher"), "latency_rounds": 2, "latency_batch_sizes": (1, 4)}
    return compress(
        str(folders / "student"),
        str(folders / out),
        random_classification_dataset(24),
        pad_collate,
        **{**settings, **kwargs},
    )


def test_compress_writes_a_measured_folder_per_export_whose_card_snippet_loads_it(folders):
    metrics = run(folders)
    models = metrics["models"]
    assert list(models) == ["teacher", "student", "int8", "onnx", "onnx-int8"]
    for name in ("int8", "onnx", "onnx-int8"):
        facts = models[name]
        for key in ("accuracy", "student_agreement", "teacher_agreement", "size_bytes", "parameters", "drop_points"):
            assert key in facts, (name, key)
        assert set(facts["latency_ms"]) == {"1", "4"}
        assert facts["within_tolerance"] is True
        folder = folders / "out" / name
        assert (folder / TRADEOFF_PLOT).is_file() and (folder / COMPRESSION_FILE).is_file()
        card = (folder / "README.md").read_text()
        _, body = split_card(card)
        assert f"![Accuracy against latency]({TRADEOFF_PLOT})" in body
        assert f"| **{name}** |" in body
        assert "pipeline(" not in body  # an export does not load with a pipeline
        snippet = re.search(r"## How to use\n\n```python\n(.*?)```", body, re.S).group(1)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(snippet, {})
        assert printed.getvalue().strip() in ("negative", "neutral", "positive")
    assert models["onnx"]["student_agreement"] == 1.0  # float ONNX computes the same logits
    assert json.loads((folders / "out" / COMPRESSION_FILE).read_text())["models"].keys() == models.keys()


def test_compress_refuses_to_overwrite_an_export_folder(folders):
    run(folders, formats=["int8"])
    with pytest.raises(
        ValueError,
        match=r"^output_dir '.*/out' already holds int8/ \(an earlier compress's export\), which compress would "
        r"replace: nothing was written\. Give another --output_dir, move it away, or pass --overwrite_output_dir to "
        r"replace it$",
    ):
        run(folders, formats=["int8"])


def test_compress_refuses_to_write_into_the_teacher_folder(folders):
    with pytest.raises(ValueError, match="teacher"):
        run(folders, out="teacher/exports", formats=["int8"])


def test_an_export_beyond_the_tolerance_is_reported_not_hidden(folders, monkeypatch):
    import hf_distill.compress as module

    real = module.quantize_int8

    def damaged(model):  # a quantisation that predicts the next class: it loses every example
        model = copy.deepcopy(model)
        with torch.no_grad():
            model.classifier.weight.copy_(model.classifier.weight.roll(1, 0))
            model.classifier.bias.copy_(model.classifier.bias.roll(1, 0))
        return real(model)

    # Labels the float student predicts: it scores 100%, the damaged export 0%.
    from transformers import AutoModelForSequenceClassification

    student = AutoModelForSequenceClassification.from_pretrained(folders / "student").eval()
    data = random_classification_dataset(24)
    with torch.no_grad():
        predicted = [int(student(**pad_collate([row])).logits.argmax()) for row in data.remove_columns("labels")]
    data = data.remove_columns("labels").add_column("labels", predicted)
    monkeypatch.setattr(module, "quantize_int8", damaged)
    metrics = compress(
        str(folders / "student"), str(folders / "out"), data, pad_collate, formats=["int8"], latency_rounds=1
    )
    facts = metrics["models"]["int8"]
    assert facts["drop_points"] == 100.0 and facts["within_tolerance"] is False
    body = (folders / "out" / "int8" / "README.md").read_text()
    assert (
        f"`int8` loses {facts['drop_points']:.2f} points against the float student: **more than** the tolerance"
        in body
    )


def test_unknown_formats_are_refused(folders):
    with pytest.raises(ValueError, match=r"formats: unknown export \['int4'\]; choose among int8, onnx, onnx-int8"):
        run(folders, formats=["int4"])


def test_the_command_exports_and_prints_the_table(tmp_path, capsys):
    from hf_distill.cli import run_command

    folders = tmp_path
    tokenizer = tiny_tokenizer()
    teacher = tiny_bert(num_layers=2, vocab_size=len(tokenizer))
    for name, model in (("teacher", teacher), ("student", build_student(teacher, num_layers=1))):
        model.save_pretrained(folders / name)
        tokenizer.save_pretrained(folders / name)

    write_sentiment_rows(folders / "train.csv", 16)
    write_sentiment_rows(folders / "test.csv", 12, seed=1)
    run_command(
        [
            "compress",
            "--student_model_name_or_path", str(folders / "student"),
            "--teacher_model_name_or_path", str(folders / "teacher"),
            "--output_dir", str(folders / "cli"),
            "--train_file", str(folders / "train.csv"),
            "--test_file", str(folders / "test.csv"),
            "--formats", "int8,onnx-int8",
            "--latency_rounds", "1",
            "--latency_batch_sizes", "2",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert re.search(r"^onnx-int8 +\d+\.\d\d +\d+\.\d\d%", printed, re.M)
    assert (folders / "cli" / "onnx-int8" / "model.onnx").is_file()
    assert not (folders / "cli" / "onnx").exists()
    saved = json.loads((folders / "cli" / "int8" / COMPRESSION_FILE).read_text())
    assert saved["dataset"]["eval_examples"] == 12 and saved["variant"] == "int8"
    assert saved["models"]["student"]["size_bytes"] > 0 and saved["models"]["teacher"]["size_bytes"] > 0
