"""`hf-distill` end to end, in-process, on tiny models and local files."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_task_models import write_sentiment_rows
from transformers import AutoModelForSequenceClassification

from hf_distill.cli import main, run_command
from hf_distill.model_card import METRICS_FILE

REPO = Path(__file__).resolve().parents[1]


def write_recipe(tmp_path, teacher_folder, extension, **overrides):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    recipe = {
        "teacher_model_name_or_path": str(teacher_folder),
        "train_file": str(write_sentiment_rows(data / f"train{extension}", 48, seed=1)),
        "validation_file": str(write_sentiment_rows(data / f"validation{extension}", 16, seed=2)),
        "test_file": str(write_sentiment_rows(data / f"test{extension}", 16, seed=3)),
        "output_dir": str(tmp_path / "student"),
        "student_num_layers": 2,
        "max_steps": 3,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "temperature": 3.0,
        "hidden_weight": 1.0,
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "disable_tqdm": True,
        "latency_batch_size": 4,
        "latency_sequence_length": 8,
        **overrides,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("extension", [".csv", ".jsonl"])
def test_train_from_a_recipe_with_a_flag_override(tmp_path, teacher_folder, extension):
    recipe = write_recipe(tmp_path, teacher_folder, extension)
    main(["train", str(recipe), "--temperature", "4", "--student_layer_strategy", "first"])

    folder = tmp_path / "student"
    student, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert student.config.num_hidden_layers == 2 and student.config.distillation_teacher_layers == [0, 1]
    assert student.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert (folder / "tokenizer_config.json").is_file() and (folder / "README.md").is_file()
    assert not (folder / "distillation_projections.safetensors").exists()

    metrics = json.loads((folder / METRICS_FILE).read_text())
    assert metrics["distillation"]["temperature"] == 4.0  # the flag beat the recipe's 3.0
    assert metrics["distillation"]["hidden_weight"] == 1.0
    assert metrics["dataset"] == {
        "name": f"train{extension}",
        "train_examples": 48,
        "eval_split": "test",
        "eval_file": f"test{extension}",  # the file the figures were measured on, not the training file
        "eval_examples": 16,
    }
    for role in ("teacher", "student"):
        facts = metrics[role]
        for key in ("accuracy", "macro_f1", "parameters", "size_bytes", "latency_ms_per_batch", "num_layers"):
            assert isinstance(facts[key], (int, float)), (role, key)
    assert 0 <= metrics["student"]["teacher_agreement"] <= 1
    assert metrics["student"]["parameters"] < metrics["teacher"]["parameters"]
    assert metrics["latency"]["batch_size"] == 4
    assert metrics["training"]["max_steps"] == 3


def test_student_command_builds_and_saves(tmp_path, teacher_folder, capsys):
    main(
        [
            "student",
            "--teacher_model_name_or_path",
            str(teacher_folder),
            "--output_dir",
            str(tmp_path / "s"),
            "--student_layers",
            "1,3",
        ]
    )
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    assert student.config.num_hidden_layers == 2 and student.config.distillation_teacher_layers == [1, 3]
    assert (tmp_path / "s" / "tokenizer_config.json").is_file()
    assert "2-layer student" in capsys.readouterr().out


def test_student_command_never_writes_into_the_teacher_or_another_model(tmp_path, teacher_folder):
    before = {p.name: p.read_bytes() for p in teacher_folder.iterdir()}
    flags = ["--teacher_model_name_or_path", str(teacher_folder), "--student_layers", "1,3"]
    for extra in ([], ["--overwrite_output_dir"]):  # the teacher's folder: refused even when asked
        with pytest.raises(ValueError, match="is the teacher's folder"):
            run_command(["student", *flags, "--output_dir", str(teacher_folder), *extra])
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds a model that hf_distill did not write"):
        run_command(["student", *flags, "--output_dir", str(other)])
    assert {p.name: p.read_bytes() for p in teacher_folder.iterdir()} == before
    assert (other / "config.json").read_text() == "{}"
    run_command(["student", *flags, "--output_dir", str(other), "--overwrite_output_dir"])
    assert "distillation_teacher" in (other / "config.json").read_text()


def test_cache_command_then_train_from_it_equals_training_with_the_teacher(tmp_path, teacher_folder, capsys):
    recipe = write_recipe(tmp_path, teacher_folder, ".csv", measure_latency=False)
    main(["cache", str(recipe), "--cache_dir", str(tmp_path / "cache"), "--hidden_dtype", "float32"])
    out = capsys.readouterr().out
    assert "48 examples, all logits, hidden states [2, 4] (float32)" in out  # the recipe's layer map, 4 -> 2
    assert "--teacher_cache" in out

    main(["train", str(recipe), "--teacher_cache", str(tmp_path / "cache"), "--output_dir", str(tmp_path / "cached")])
    main(["train", str(recipe), "--output_dir", str(tmp_path / "live")])
    cached = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cached").state_dict()
    live = AutoModelForSequenceClassification.from_pretrained(tmp_path / "live").state_dict()
    assert max((cached[k] - live[k]).abs().max().item() for k in live) < 1e-5
    assert (
        "read from a teacher cache holding all the teacher's logits" in (tmp_path / "cached" / "README.md").read_text()
    )
    assert json.loads((tmp_path / "cached" / METRICS_FILE).read_text())["distillation"]["teacher_cache"] == {
        "top_k": None,
        "hidden_layers": [2, 4],
        "hidden_dtype": "float32",
    }

    # A recipe whose data differ from the cache's is refused, naming the cache.
    other = write_sentiment_rows(tmp_path / "other.csv", 48, seed=7)
    with pytest.raises(ValueError, match="built from other data"):
        run_command(["train", str(recipe), "--teacher_cache", str(tmp_path / "cache"), "--train_file", str(other)])


def test_train_with_two_teachers_and_a_merged_lora_student(tmp_path, teacher_folder):
    from tiny_task_models import CORE_WORDS, tiny_bert, tiny_tokenizer

    second = tmp_path / "teacher2"
    tiny_bert(num_layers=2, seed=4, vocab_size=len(CORE_WORDS) + 5).save_pretrained(second)
    tiny_tokenizer().save_pretrained(second)
    recipe = write_recipe(tmp_path, teacher_folder, ".csv", measure_latency=False)
    lora = '{"peft_type": "LORA", "r": 4, "target_modules": ["query", "value"]}'
    teachers = f"{teacher_folder},{second}"
    main(
        ["train", str(recipe), "--teacher_model_name_or_path", teachers, "--teacher_weights", "0.6,0.4"]
        + ["--peft_config", lora, "--merge_adapter_on_save", "true", "--hidden_weight", "0"]
    )

    folder = tmp_path / "student"
    student, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # merged: a plain model
    metrics = json.loads((folder / METRICS_FILE).read_text())
    # Local teachers by their folder names (no local path in a published file).
    assert metrics["distillation"]["teachers"] == "teacher,teacher2"
    assert metrics["distillation"]["teacher_weights"] == "0.6,0.4"
    assert metrics["distillation"]["peft"]["saved"] == "merged"
    card = (folder / "README.md").read_text()
    assert "Teacher ensemble:** soft targets averaged over" in card and "(weight 0.4)" in card
    assert "the adapter is merged into the weights" in card


@pytest.mark.parametrize(
    "command, flags",
    [
        ("train", ["--temperature", "--kd_weight", "--train_file", "--text_column", "--student_num_layers"]),
        ("student", ["--teacher_model_name_or_path", "--student_layer_strategy", "--output_dir"]),
        (
            "cache",
            [
                "--cache_dir",
                "--top_k",
                "--logit_samples",
                "--hidden_layers",
                "--hidden_dtype",
                "--shard_size",
                "--temperature",
            ],
        ),
    ],
)
def test_help_explains_every_option(command, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in flags:
        assert flag in text
    assert "Softmax temperature" in text or command == "student"


def test_top_level_help_and_unknown_command(capsys):
    main(["--help"])
    assert "train" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["distil"])
    assert exit_info.value.code == 2 and "unknown command 'distil'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "overrides, files, error, message",
    [
        ({"label_column": "mood"}, {}, ValueError, "mood"),
        ({"teacher_model_name_or_path": "/no/such/teacher"}, {}, FileNotFoundError, "/no/such/teacher"),
        ({"lerning_rate": 0.1}, {}, SystemExit, "'lerning_rate' is not an option.*did you mean 'learning_rate'"),
        ({}, {"train": "text,sentiment\n"}, ValueError, "empty"),
        (
            {},
            {"train": "text,sentiment\ngood movie,ecstatic\n"},
            ValueError,
            "'ecstatic'.*not one of the teacher's labels",
        ),
    ],
)
def test_bad_input_fails_with_a_message_naming_it(tmp_path, teacher_folder, overrides, files, error, message, capsys):
    recipe = write_recipe(tmp_path, teacher_folder, ".csv", **overrides)
    for split, content in files.items():
        (tmp_path / "data" / f"{split}.csv").write_text(content)
    with pytest.raises(error) as raised:
        run_command(["train", str(recipe)])
    # A usage mistake is argparse's error on stderr (exit status 2); a run's error propagates to the caller.
    assert re.search(message, capsys.readouterr().err if error is SystemExit else str(raised.value))
    assert not (tmp_path / "student" / "model.safetensors").exists()


def test_accelerate_script_runs_the_same_code(tmp_path, teacher_folder):
    recipe = write_recipe(tmp_path, teacher_folder, ".csv", max_steps=1, measure_latency=False)
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "distill.py"), str(recipe)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "student" / METRICS_FILE).read_text())["student"]["num_layers"] == 2


def _downloaded(repo_id, tmp_path):
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, cache_dir=str(tmp_path / "cache")))


@pytest.mark.timeout(180)
def test_train_with_push_to_hub_publishes_the_student_with_metrics_and_card(tmp_path, teacher_folder, hub):
    server = hub(xet=False)
    recipe = write_recipe(
        tmp_path, teacher_folder, ".csv", max_steps=1, push_to_hub=True, hub_model_id="me/tiny-student"
    )
    main(["train", str(recipe), "--hub_token", server.token])
    remote = _downloaded("me/tiny-student", tmp_path)
    local = tmp_path / "student"
    names = sorted(p.name for p in remote.iterdir())
    assert {"model.safetensors", "config.json", "README.md", METRICS_FILE, "tokenizer_config.json"} <= set(names)
    assert "training_args.bin" not in names and not any("projection" in n for n in names)
    for name in ("model.safetensors", METRICS_FILE, "README.md"):
        assert (remote / name).read_bytes() == (local / name).read_bytes()
    front_matter = yaml.safe_load((remote / "README.md").read_text().split("---")[1])
    assert "distillation" in front_matter["tags"] and front_matter["library_name"] == "transformers"
    accuracy = json.loads((local / METRICS_FILE).read_text())["student"]["accuracy"]
    assert front_matter["model-index"][0]["results"][0]["metrics"][0]["value"] == pytest.approx(accuracy)


@pytest.mark.timeout(180)
def test_push_command_publishes_a_saved_folder_and_can_be_rerun(tmp_path, teacher_folder, hub, capsys):
    server = hub(xet=False)
    recipe = write_recipe(tmp_path, teacher_folder, ".csv", max_steps=1, measure_latency=False)
    main(["train", str(recipe)])
    folder = tmp_path / "student"
    (folder / "distillation_projections.safetensors").write_bytes(b"not for the hub")
    for _ in range(2):  # a second push of the same folder succeeds and changes nothing
        main(["push", str(folder), "--repo_id", "me/pushed", "--private", "true", "--token", server.token])
    assert "Pushed" in capsys.readouterr().out
    remote = _downloaded("me/pushed", tmp_path)
    assert (remote / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    assert not (remote / "distillation_projections.safetensors").exists()
    with pytest.raises(RuntimeError, match="authentication failed"):
        run_command(["push", str(folder), "--repo_id", "me/pushed", "--token", "hf_wrong"])
