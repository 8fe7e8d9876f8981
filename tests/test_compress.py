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
from transformers import AutoModelForSequenceClassification

from hf_distill import build_student
from hf_distill.compress import COMPRESSION_FILE, TRADEOFF_PLOT, CompressArguments, compress


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


def run(folders, out="out", student="student", tokenizer=None, **settings):
    """`compress` with quick latency settings: the student by its folder's name, or a model object."""
    args = CompressArguments(
        student_model_name_or_path=str(folders / student) if isinstance(student, str) else None,
        output_dir=str(folders / out),
        teacher_model_name_or_path=str(folders / "teacher"),
        **{"latency_rounds": 2, "latency_batch_sizes": (1, 4), **settings},
    )
    model = None if isinstance(student, str) else student
    return compress(model, args, random_classification_dataset(24), pad_collate, tokenizer=tokenizer)


def test_compress_writes_a_measured_folder_per_export_whose_card_snippet_loads_it(folders):
    metrics = run(folders)
    models = metrics["models"]
    assert list(models) == ["teacher", "student", "int8", "onnx", "onnx-int8"]
    for name in ("int8", "onnx", "onnx-int8"):
        facts = models[name]
        for key in ("accuracy", "student_agreement", "teacher_agreement", "size_bytes", "parameters", "drop_points"):
            assert key in facts, (name, key)
        assert set(facts["latency_ms"]) == {"1", "4"}
        low, high = facts["latency_iqr_ms"]["4"]  # every latency with its spread over the rounds
        assert low <= facts["latency_ms"]["4"] <= high
        low, high = facts["speedup"]["4"]["iqr"]  # the per-round ratio to the teacher's time
        assert low <= facts["speedup"]["4"]["median"] <= high
        assert facts["within_tolerance"] is True
        folder = folders / "out" / name
        assert (folder / TRADEOFF_PLOT).is_file() and (folder / COMPRESSION_FILE).is_file()
        card = (folder / "README.md").read_text()
        _, body = split_card(card)
        assert f"![Accuracy against latency]({TRADEOFF_PLOT})" in body
        assert f"| **{name}** |" in body
        assert "| Latency, batch 4 | Speed-up vs. teacher, batch 1 | Speed-up vs. teacher, batch 4 |" in body
        assert re.search(rf"\| \*\*{name}\*\* \|.* ms \(IQR [\d.]+–[\d.]+\) \| [\d.]+× \(IQR [\d.]+–[\d.]+\) \|", body)
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


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_compress_refuses_to_write_into_a_models_folder_naming_its_role(folders, role):
    """An output folder inside the student's folder used to be called "the teacher's folder"."""
    before = listing(folders / role)
    with pytest.raises(ValueError, match=rf"^output_dir '.*/{role}/exports' is inside the {role}'s folder '.*{role}'"):
        run(folders, out=f"{role}/exports", formats=["int8"])
    assert listing(folders / role) == before


def listing(folder):
    """Every file under `folder` with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_files_compress_would_replace_are_refused_before_anything_is_written(folders):
    out = folders / "out"
    out.mkdir()
    (out / COMPRESSION_FILE).write_text("my own notes")  # the user's files of those names, or another tool's
    (out / TRADEOFF_PLOT).write_bytes(b"my own plot")
    (out / "results.csv").write_text("kept")
    before = listing(out)
    with pytest.raises(
        ValueError,
        match=rf"^output_dir '.*out' already holds {COMPRESSION_FILE}, {TRADEOFF_PLOT}, which compress would replace: "
        r"nothing was written\. Give another --output_dir, move them away, or pass --overwrite_output_dir to replace "
        r"them$",
    ):
        run(folders, formats=["int8"])
    assert listing(out) == before and sorted(p.name for p in folders.iterdir()) == ["out", "student", "teacher"]
    run(folders, formats=["int8"], overwrite_output_dir=True)
    assert json.loads((out / COMPRESSION_FILE).read_text())["written_by"] == "hf-distill compress"
    assert (out / "results.csv").read_text() == "kept" and (out / "int8" / "model_int8.pt").is_file()


def test_adding_a_format_keeps_the_earlier_rows_measured_again_in_one_table(folders):
    """`--formats int8` then `--formats onnx` into one folder: the table and plot keep the int8 row (measured again
    with the others), and the int8 folder is left as it was."""
    first = run(folders, formats=["int8"])
    int8_folder = listing(folders / "out" / "int8")
    second = run(folders, formats=["onnx"])
    assert list(second["models"]) == ["teacher", "student", "int8", "onnx"]
    for key in ("accuracy", "student_agreement", "teacher_agreement", "size_bytes", "export_seconds"):
        assert second["models"]["int8"][key] == first["models"]["int8"][key], key
    assert set(second["models"]["int8"]["latency_ms"]) == {"1", "4"}  # measured in this run's rounds
    assert json.loads((folders / "out" / COMPRESSION_FILE).read_text())["models"] == second["models"]
    assert listing(folders / "out" / "int8") == int8_folder
    _, body = split_card((folders / "out" / "onnx" / "README.md").read_text())
    assert "| int8 | int8 PyTorch (dynamic) |" in body and "| **onnx** | float32 ONNX |" in body


def test_exports_of_another_student_are_never_mixed_into_one_table(folders):
    run(folders, formats=["int8"])
    teacher = AutoModelForSequenceClassification.from_pretrained(folders / "teacher")
    build_student(teacher, layers=[1, 3]).save_pretrained(folders / "other")
    vocab_tokenizer().save_pretrained(folders / "other")
    int8_folder = listing(folders / "out" / "int8")
    with pytest.raises(
        ValueError,
        match=r"^output_dir '.*out' holds exports \(int8/\) of another student than this one \(its "
        r"compression_metrics.json\): one table cannot hold both\. Give another --output_dir, or pass "
        r"--overwrite_output_dir to replace its table with this student's$",
    ):
        run(folders, student="other", formats=["onnx"])
    assert not (folders / "out" / "onnx").exists()
    metrics = run(folders, student="other", formats=["onnx"], overwrite_output_dir=True)
    assert list(metrics["models"]) == ["teacher", "student", "onnx"]
    assert listing(folders / "out" / "int8") == int8_folder


def test_a_failed_compress_leaves_nothing_behind_and_a_rerun_works(folders, monkeypatch):
    """Through the Python API with a model object, as the issue found it: a failure after the int8 export was written
    left a half-written int8/, and the rerun was refused because that folder was not empty."""
    import hf_distill.compress as module

    student = AutoModelForSequenceClassification.from_pretrained(folders / "student")
    student.config.architectures = None  # a model object that was never saved

    def broken(fmt, folder):
        raise KeyError("classifier.weight")

    real = module._load_variant
    monkeypatch.setattr(module, "_load_variant", broken)
    with pytest.raises(KeyError):
        run(folders, student=student, formats=["int8"], tokenizer=vocab_tokenizer())
    assert sorted(p.name for p in folders.iterdir()) == ["student", "teacher"]
    monkeypatch.setattr(module, "_load_variant", real)
    metrics = run(folders, student=student, formats=["int8"], tokenizer=vocab_tokenizer())
    assert metrics["models"]["int8"]["student_agreement"] >= 0.9
    assert sorted(p.name for p in folders.iterdir()) == ["out", "student", "teacher"]


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
    args = CompressArguments(
        student_model_name_or_path=str(folders / "student"),
        output_dir=str(folders / "out"),
        formats="int8",
        latency_rounds=1,
    )
    metrics = compress(None, args, data, pad_collate)
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


def test_each_model_is_given_once_and_the_settings_as_compress_arguments(folders):
    """The settings are a CompressArguments; a model is a model object or a folder in them, never both."""
    student = AutoModelForSequenceClassification.from_pretrained(folders / "student")
    data, out = random_classification_dataset(4), str(folders / "out")
    given_twice = CompressArguments(student_model_name_or_path=str(folders / "student"), output_dir=out)
    with pytest.raises(ValueError, match=r"^the student is given twice: as a model object and as "):
        compress(student, given_twice, data, pad_collate)
    teacher_twice = CompressArguments(output_dir=out, teacher_model_name_or_path=str(folders / "teacher"))
    with pytest.raises(ValueError, match=r"^the teacher is given twice: "):
        compress(student, teacher_twice, data, pad_collate, teacher=student)
    with pytest.raises(ValueError, match=r"^compress needs a student: pass a model object, or its folder as "):
        compress(None, CompressArguments(output_dir=out), data, pad_collate)
    with pytest.raises(TypeError, match=r"^the student's folder goes in CompressArguments\(student_model_name_or_pa"):
        compress(str(folders / "student"), CompressArguments(output_dir=out), data, pad_collate)
    with pytest.raises(TypeError, match=r"^compress takes its settings as a CompressArguments, got str"):
        compress(student, out, data, pad_collate)
    with pytest.raises(TypeError, match=r"^the folders of compared students go in CompressArguments\(compare_with"):
        compress(student, CompressArguments(output_dir=out), data, pad_collate, compare_with=[out])
    with pytest.raises(ValueError, match=r"^output_dir must name the folder the exports are written into"):
        CompressArguments(student_model_name_or_path=str(folders / "student"))
    with pytest.raises(ValueError, match=r"^compare_with holds the folders of other float students"):
        CompressArguments(output_dir=out, compare_with=[student])
    assert CompressArguments(output_dir=out, compare_with=" a, b,").compare_with == ["a", "b"]
    assert not (folders / "out").exists()


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


# ---- bad inputs of `hf-distill compress`: one line, at start-up, nothing written ------------------------------------


def make_student_folder(folders, name):
    """The student folders of the refusals below."""
    folder = folders / name
    if name == "empty":
        folder.mkdir()
    elif name == "no-tokenizer":
        AutoModelForSequenceClassification.from_pretrained(folders / "student").save_pretrained(folder)
    elif name == "question-answering":
        from tiny_task_models import question_answerer

        question_answerer(num_layers=1).save_pretrained(folder)
        vocab_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "student, flags, code, message",
    [
        ("missing", [], 1, r"could not load the student '.*missing': no such folder\. .*--student_model_name_or_path"),
        (
            "empty",
            [],
            1,
            r"could not load the student '.*empty': the folder is empty, with no config\.json: it is not",
        ),
        ("no-tokenizer", [], 1, r"the student folder '.*no-tokenizer' holds no tokenizer files .*save_pretrained\("),
        ("student", ["--formats", "int4"], 2, r"formats: unknown export \['int4'\]; choose among int8, onnx, onnx-"),
        ("student", ["--max_accuracy_drop", "-1"], 2, r"max_accuracy_drop must be a finite number of points >= 0"),
        ("student", ["--max_accuracy_drop", "nan"], 2, r"max_accuracy_drop must be a finite number of points >= 0 "),
        ("student", ["--max_accuracy_drop", "150"], 1, r"max_accuracy_drop is in points of Accuracy \(0 to 100\), go"),
        ("student", ["--latency_batch_sizes", "0"], 2, r"latency_batch_sizes must be whole numbers >= 1 such as '1,"),
        ("student", ["--latency_rounds", "0"], 2, r"latency_rounds must be a whole number >= 1 \(--latency_rounds\)"),
        ("question-answering", [], 1, r"compress exports and measures a student's `logits` output, but a question-"),
    ],
    ids=["missing", "empty", "no-tokenizer", "format", "negative", "nan", "above-100", "batch-0", "rounds-0", "qa"],
)
def test_bad_inputs_of_the_command_are_one_line_errors_before_anything_is_written(
    folders, capsys, student, flags, code, message
):
    from hf_distill.cli import main

    make_student_folder(folders, student)
    write_sentiment_rows(folders / "train.csv", 8)
    write_sentiment_rows(folders / "test.csv", 8, seed=1)
    before = sorted(p.name for p in folders.iterdir())
    argv = ["compress", "--student_model_name_or_path", str(folders / student), "--output_dir", str(folders / "out")]
    argv += ["--train_file", str(folders / "train.csv"), "--test_file", str(folders / "test.csv"), *flags]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    prefix = "hf-distill compress: error: " if code == 2 else "hf-distill: error: "
    assert exited.value.code == code and re.match(re.escape(prefix) + message, error), error
    assert sorted(p.name for p in folders.iterdir()) == before  # nothing written, not even the output folder


def test_an_export_a_family_does_not_support_is_one_line_and_leaves_nothing(folders, monkeypatch):
    """An architecture whose graph the ONNX exporter cannot trace: one line naming the format and the fix, and the
    formats already built are not written either (the output folder appears whole or not at all)."""
    import torch.onnx

    def untraceable(*args, **kwargs):
        raise RuntimeError(
            "Exporting the operator 'aten::scaled_dot_product_attention' to ONNX opset 17 is not supported.\n"
            "Please feel free to request support"
        )

    monkeypatch.setattr(torch.onnx, "export", untraceable)
    with pytest.raises(RuntimeError) as error:
        run(folders, formats=["int8", "onnx"])
    assert str(error.value) == (
        "the onnx export of this BertForSequenceClassification failed (RuntimeError: Exporting the operator "
        "'aten::scaled_dot_product_attention' to ONNX opset 17 is not supported.); nothing was written to "
        f"{folders / 'out'}. Leave out --formats onnx"
    )
    assert sorted(p.name for p in folders.iterdir()) == ["student", "teacher"]
