"""The command behaves as people expect a Hugging Face command to: `--config RECIPE`, argparse's one-line usage
errors, the run's errors as one line, a quick `--help`, packaged recipes and Accelerate configs, `-m hf_distill.cli`.
"""

import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_task_models import write_sentiment_rows

import hf_distill
from hf_distill import cli
from hf_distill.cli import main, parse_with_recipe, run_command, run_parser
from hf_distill.model_card import METRICS_FILE

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def recipe_values(tmp_path, teacher, **overrides):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return {
        "teacher_model_name_or_path": str(teacher),
        "train_file": str(write_sentiment_rows(data / "train.csv", 24, seed=1)),
        "validation_file": str(write_sentiment_rows(data / "validation.csv", 8, seed=2)),
        "output_dir": str(tmp_path / "student"),
        "student_num_layers": 2,
        "max_steps": 1,
        "per_device_train_batch_size": 8,
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "disable_tqdm": True,
        "measure_latency": False,
        **overrides,
    }


def write_recipe(tmp_path, teacher, **overrides):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_values(tmp_path, teacher, **overrides)))
    return path


def parse_train(argv):
    """The dataclasses `hf-distill train ARGV` would run with, by name."""
    parsed = cli._split_run_arguments(parse_with_recipe(run_parser("hf-distill train"), argv))
    student, data, _, measure, config = parsed
    return {"student": student, "data": data, "measure": measure, "config": config}


def usage_error(argv, capsys) -> str:
    """Runs the command, expects argparse's usage error, and returns its message (the text after `error: `)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) == 2 and lines[0].startswith(f"usage: hf-distill {argv[0]}"), err
    prefix = f"hf-distill {argv[0]}: error: "
    assert lines[1].startswith(prefix), err
    return lines[1][len(prefix) :]


def run_error(argv, capsys, code=1) -> str:
    """Runs the command, expects the run's error as one line, and returns the message."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines[-1].startswith("hf-distill: error: "), err
    # Progress bars may come before it, but nothing of the error spills onto other lines.
    assert sum("error" in line.lower() for line in lines) == 1, err
    return lines[-1].removeprefix("hf-distill: error: ")


# --- 1. --config RECIPE --------------------------------------------------------------------------------------------


def test_config_flag_is_the_recipe_and_trains(tmp_path, teacher_folder, capsys):
    recipe = write_recipe(tmp_path, teacher_folder, temperature=3.0)
    # Before: "Pass exactly one of --dataset_name or --train_file (neither was given)" (the recipe was ignored).
    main(["train", "--output_dir", str(tmp_path / "flagged"), "--config", str(recipe)])
    metrics = json.loads((tmp_path / "flagged" / METRICS_FILE).read_text())
    assert metrics["distillation"]["temperature"] == 3.0 and metrics["student"]["num_layers"] == 2
    assert (tmp_path / "flagged" / "README.md").is_file() and not (tmp_path / "student").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["{recipe}", "--temperature", "5"],
        ["--config", "{recipe}", "--temperature", "5"],
        ["--temperature", "5", "--config={recipe}"],
    ],
)
def test_config_flag_anywhere_equals_the_positional_recipe(tmp_path, argv):
    recipe = write_recipe(tmp_path, tmp_path / "teacher", kd_weight=0.25)
    parsed = parse_train([a.format(recipe=recipe) for a in argv])
    assert parsed["config"].kd_weight == 0.25 and parsed["config"].temperature == 5.0  # recipe, then the flag
    assert parsed["data"].train_file.endswith("train.csv") and parsed["student"].student_num_layers == 2


@pytest.mark.parametrize("command", ["train", "cache", "student"])
def test_help_names_the_recipe_and_config(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the text
    assert out.startswith(f"usage: hf-distill {command} [RECIPE | --config RECIPE]")
    assert "--config RECIPE, as TRL's and transformers' scripts take it" in out
    assert 'save_strategy: "no"' in out and "HF_DISTILL_TRACEBACK=1" in out


def test_two_recipes_are_a_usage_error(tmp_path, capsys):
    recipe = write_recipe(tmp_path, tmp_path / "teacher")
    message = usage_error(["train", str(recipe), "--config", str(recipe)], capsys)
    assert message.startswith("give one recipe, not 2")


# --- 2. usage errors: argparse's one line, exit status 2 ------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, recipe_text, message",
    [
        # Before: a 15-line traceback ending in "Some specified arguments are not used by the HfArgumentParser".
        (
            ["--lerning_rate", "0.1"],
            None,
            "unrecognized arguments: --lerning_rate 0.1 (--lerning_rate: did you mean --learning_rate?)",
        ),
        # Before: a 19-line traceback ending in DistillationConfig.__post_init__'s ValueError.
        (["--temperature", "-1"], None, "temperature must be > 0, got -1.0; try 1.0 to 4.0 (DistilBERT used 2.0)"),
        # DataArguments.__post_init__
        (
            ["--dataset_name", "imdb"],
            None,
            "Pass exactly one of --dataset_name or --train_file (both were given).",
        ),
        (["--task", "translation"], None, "unknown task 'translation'"),
        # Recipe problems (before: `SystemExit("hf-distill: ...")`, exit status 1, no usage line).
        ([], "- a\n- b\n", "must be a mapping of `option: value` lines, not a list"),
        ([], "lerning_rate: 0.1\n", "'lerning_rate' is not an option of this command; did you mean 'learning_rate'?"),
        ([], "teacher_model_name_or_path: [a\n", "is not valid YAML (line 2, column 1: expected ',' or ']'"),
    ],
)
def test_usage_mistakes_are_one_argparse_error(tmp_path, flags, recipe_text, message, capsys):
    recipe = write_recipe(tmp_path, tmp_path / "teacher")
    if recipe_text is not None:
        recipe.write_text(recipe_text)
    assert message in usage_error(["train", str(recipe), *flags], capsys)


def test_missing_recipe_names_the_packaged_ones(tmp_path, capsys):
    message = usage_error(["train", str(tmp_path / "nope.yaml")], capsys)
    assert message.startswith(f"recipe '{tmp_path / 'nope.yaml'}' does not exist") and "(tweets)" in message
    assert "did you mean the packaged recipe 'tweets'" in usage_error(["train", "--config", "tweet"], capsys)


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    assert exit_info.value.code == 2
    assert "hf-distill: error: unknown command 'trian'; did you mean 'train'?" in capsys.readouterr().err


def test_push_usage_mistake(tmp_path, capsys):
    message = usage_error(["push", str(tmp_path), "--repo_id", "me/x", "--privte", "true"], capsys)
    assert message == "unrecognized arguments: --privte true (--privte: did you mean --private?)"


# --- 3. a YAML value whose type does not fit its option ------------------------------------------------------------


@pytest.mark.parametrize(
    "line, message",
    [
        # Before: "ValueError: False is not a valid SaveStrategy" after a 32-line traceback.
        (
            "save_strategy: no",
            "`save_strategy: no` is read by YAML as the boolean false, but save_strategy takes one of: no, "
            'steps, epoch, best; quote it to keep it as written: save_strategy: "no"',
        ),
        # Before: "TypeError: expected str, bytes or os.PathLike object, not bool" from posixpath.
        (
            "output_dir: yes",
            "`output_dir: yes` is read by YAML as the boolean true, but output_dir takes text; quote it to keep it "
            'as written: output_dir: "yes"',
        ),
        # YAML 1.1 reads 12:6 as a base-60 number.
        ("layer_map: 12:6", "`layer_map: 12:6` is read by YAML as the integer 726, but layer_map takes text"),
        ("max_steps: 2.5", "`max_steps: 2.5` is read by YAML as the number 2.5, but max_steps takes an integer"),
        ("max_steps: yes", "`max_steps: yes` is read by YAML as the boolean true, but max_steps takes an integer"),
        ("learning_rate: fast", "`learning_rate: fast` is read by YAML as the text 'fast', but learning_rate takes a"),
        ("fp16: maybe", "`fp16: maybe` is read by YAML as the text 'maybe', but fp16 takes true or false"),
        ("save_strategy: weekly", "`save_strategy: weekly` is not one of: no, steps, epoch, best"),
    ],
)
def test_recipe_value_of_the_wrong_yaml_type_names_key_and_fix(tmp_path, line, message, capsys):
    recipe = write_recipe(tmp_path, tmp_path / "teacher")
    lines = [text for text in recipe.read_text().splitlines() if text.split(":")[0] != line.split(":")[0]]
    recipe.write_text("\n".join([*lines, line]) + "\n")
    got = usage_error(["train", str(recipe)], capsys)
    assert got.startswith(f"{recipe}, line {len(lines) + 1}: ") and message in got, got


def test_recipe_values_that_fit_are_taken_as_written(tmp_path):
    recipe = write_recipe(tmp_path, tmp_path / "teacher")
    extra = 'learning_rate: 5e-5\nstudent_layers: 1\nlayer_map: "2:1"\nsave_strategy: "no"\nfp16: false\n'
    recipe.write_text(recipe.read_text().replace("student_num_layers: 2\n", "") + extra)
    parsed = parse_train([str(recipe)])
    assert parsed["config"].learning_rate == 5e-5  # YAML 1.1 reads 5e-5 as text; the option converts it
    assert parsed["student"].student_layers == [1]  # the integer 1 written as 1: taken as the text "1"
    assert parsed["config"].layer_map == "2:1" and parsed["config"].save_strategy == "no"


def test_recipe_lists_and_mappings_where_the_option_takes_them(tmp_path, capsys):
    recipe = write_recipe(
        tmp_path,
        tmp_path / "teacher",
        report_to=["none"],
        activation_checkpointing_kwargs={"use_reentrant": False},
        peft_config={"peft_type": "LORA", "r": 4, "target_modules": ["query", "value"]},
    )
    config = parse_train([str(recipe)])["config"]
    assert config.activation_checkpointing_kwargs == {"use_reentrant": False} and config.peft_config["r"] == 4
    recipe.write_text(recipe.read_text() + "output_dir: [a, b]\n")
    assert "`output_dir: [a, b]` is read by YAML as a list, but output_dir takes text" in usage_error(
        ["train", str(recipe)], capsys
    )


# --- 4. errors of the run: one line, exit status 1; the traceback on demand; Ctrl-C ---------------------------------


def test_run_error_is_one_line(tmp_path, teacher_folder, capsys):
    recipe = write_recipe(tmp_path, teacher_folder)
    # Before: a 25-line traceback ending in the FileNotFoundError.
    message = run_error(["train", str(recipe), "--train_file", str(tmp_path / "gone.csv")], capsys)
    assert message == f"--train_file '{tmp_path / 'gone.csv'}' does not exist (or is not a file)."
    # Before: a 20-line traceback. (A Hub-id-shaped typo such as `my-techer` offline still says "could not connect".)
    message = run_error(["train", str(recipe), "--teacher_model_name_or_path", "./my-techer"], capsys)
    assert message.startswith("could not load the teacher './my-techer': no such folder")
    assert not (tmp_path / "student").exists()


def test_library_errors_propagate_to_callers_of_run_command(tmp_path):
    recipe = write_recipe(tmp_path, tmp_path / "my-techer")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        run_command(["train", str(recipe)])


@pytest.mark.parametrize("how", ["env", "flag", "recipe"])
def test_traceback_on_demand(tmp_path, how, monkeypatch, capsys):
    recipe = write_recipe(tmp_path, tmp_path / "no-teacher", **({"log_level": "debug"} if how == "recipe" else {}))
    argv = ["train", str(recipe), *(["--log_level", "debug"] if how == "flag" else [])]
    if how == "env":
        monkeypatch.setenv("HF_DISTILL_TRACEBACK", "1")
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err and "in check_model_path" in err
    assert err.strip().splitlines()[-1].startswith("hf-distill: error: could not load the teacher")


def test_ctrl_c_exits_130_quietly(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli._COMMAND_FUNCTIONS, "train", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["train"])
    assert exit_info.value.code == 130 and capsys.readouterr().err == ""


def test_a_multi_line_message_becomes_one_line(monkeypatch, capsys):
    def offline(argv):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.setitem(cli._COMMAND_FUNCTIONS, "train", offline)
    message = run_error(["train"], capsys)
    assert message == "We couldn't connect to 'https://huggingface.co' to load the files. Check your connection."


def test_an_unexpected_error_names_its_type(monkeypatch, capsys):
    def broken(argv):
        raise KeyError("input_ids")

    monkeypatch.setitem(cli._COMMAND_FUNCTIONS, "train", broken)
    message = run_error(["train"], capsys)
    assert message == "KeyError: 'input_ids' (rerun with HF_DISTILL_TRACEBACK=1 for the traceback)"


# --- 5. --help without torch, datasets, transformers ---------------------------------------------------------------


def test_top_level_help_imports_nothing_heavy():
    code = (
        "import sys, hf_distill.cli\n"
        "hf_distill.cli.main(['--help'])\n"
        "hf_distill.cli.main(['configs'])\n"
        "heavy = sorted(m for m in ('torch', 'datasets', 'transformers', 'sklearn', 'pandas', 'accelerate') "
        "if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout and "cache" in result.stdout and "multi_gpu" in result.stdout


def test_public_names_import_lazily_and_stay_the_same():
    assert set(hf_distill.__all__) == set(hf_distill._MODULE_OF) and set(hf_distill.__all__) <= set(dir(hf_distill))
    for name in hf_distill.__all__:
        module = importlib.import_module(f"hf_distill.{hf_distill._MODULE_OF[name]}")
        assert getattr(hf_distill, name) is getattr(module, name), name
    namespace = {}
    exec("from hf_distill import *", namespace)
    assert set(hf_distill.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="has no attribute 'DistilationTrainer'"):
        hf_distill.DistilationTrainer  # noqa: B018


# --- 6. recipes and Accelerate configs ship in the package ----------------------------------------------------------


def test_templates_recipes_and_accelerate_configs_are_package_data():
    root = importlib.resources.files("hf_distill")
    assert root.joinpath("model_cards", "student.md").is_file()
    recipes, configs = cli.packaged_configs("recipes"), cli.packaged_configs("accelerate_configs")
    assert list(recipes) == ["tweets"]
    assert set(configs) == {"single_gpu", "multi_gpu", "multi_node", "deepspeed_zero2", "deepspeed_zero3", "fsdp"}
    assert not set(recipes) & set(configs)  # `hf-distill configs NAME` is unambiguous
    for path in configs.values():
        assert "distributed_type" in yaml.safe_load(path.read_text()), path
    # The wheel takes what pyproject's package-data names: every packaged file matches one of its patterns.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["hf_distill"]
    shipped = {p for pattern in patterns for p in (REPO / "hf_distill").glob(pattern)}
    for path in [*recipes.values(), *configs.values(), Path(str(root.joinpath("model_cards", "student.md")))]:
        assert path.resolve() in {p.resolve() for p in shipped}, path


def test_packaged_recipe_by_name_holds_only_options_of_train():
    parsed = parse_train(["--config", "tweets"])
    assert parsed["config"].temperature == 2.0 and parsed["student"].student_layers == [0, 2, 4]
    assert parse_train(["tweets"])["data"].train_file == "demo-output/data/train.csv"


def test_configs_command_prints_paths(capsys):
    run_command(["configs"])
    out = capsys.readouterr().out
    assert str(cli.packaged_configs("recipes")["tweets"]) in out and "multi_gpu" in out
    run_command(["configs", "fsdp"])
    assert capsys.readouterr().out.strip() == str(cli.packaged_configs("accelerate_configs")["fsdp"])
    assert "did you mean 'fsdp'?" in usage_error(["configs", "fsdb"], capsys)


# --- 7. python -m hf_distill.cli, and accelerate launch -m hf_distill.cli --------------------------------------------


def test_module_entry_point_runs_main():
    # An unknown flag is named before the refusals it may cause (here: no --train_file).
    result = subprocess.run(
        [sys.executable, "-m", "hf_distill.cli", "train", "--bogus"], capture_output=True, text=True, env=ENV
    )
    assert result.returncode == 2 and result.stderr.splitlines()[-1].endswith("unrecognized arguments: --bogus")
    result = subprocess.run(
        [sys.executable, "-m", "hf_distill.cli", "--help"], capture_output=True, text=True, env=ENV
    )
    assert result.returncode == 0 and "hf-distill COMMAND" in result.stdout


@pytest.mark.timeout(300)
def test_accelerate_launch_runs_the_module(tmp_path, teacher_folder):
    accelerate = Path(sys.executable).parent / "accelerate"
    recipe = write_recipe(tmp_path, teacher_folder)
    launch = [str(accelerate), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "-m", "hf_distill.cli", "train", "--config", str(recipe)]
    result = subprocess.run(launch, capture_output=True, text=True, env=ENV, timeout=280, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "student" / METRICS_FILE).read_text())["student"]["num_layers"] == 2
    # A failing run exits with 1 through the launcher too, with the one-line message.
    failed = subprocess.run(
        [*launch, "--teacher_model_name_or_path", "./my-techer"], capture_output=True, text=True, env=ENV, timeout=280
    )
    assert failed.returncode != 0 and "hf-distill: error: could not load the teacher './my-techer'" in failed.stderr
