"""`hf-distill COMMAND --help` is printed from `hf_distill/cli_options.json` without importing torch: the file must
hold what the dataclasses say, give argparse back the very help of the command's parser, and ship in the wheel."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_distill import cli, cli_help, cli_options
from hf_distill.cli import main

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "119"}
COMMANDS = list(cli.USAGES)


@pytest.fixture(autouse=True)
def fixed_width(monkeypatch):
    # argparse wraps the help to the terminal's width: the same width for both helps, whatever runs the tests.
    monkeypatch.setenv("COLUMNS", "119")


SHIPPED = json.loads((REPO / "hf_distill" / cli_help.OPTIONS_FILE).read_text(encoding="utf-8"))
# Written with another transformers than the installed one: the help then comes from the dataclasses (tested below),
# and only hf_distill's own options can be compared with the file.
OTHER_TRANSFORMERS = SHIPPED["transformers"] != cli_help.installed_transformers()


def own_options(dataclass_options: dict) -> dict:
    """Each dataclass's options without those it inherits from `TrainingArguments` (which follow transformers)."""
    from dataclasses import fields

    from transformers import TrainingArguments

    inherited = {field.name for field in fields(TrainingArguments)}
    return {name: [o for o in options if o["dest"] not in inherited] for name, options in dataclass_options.items()}


def test_shipped_options_match_the_dataclasses():
    described = cli_options.describe_commands()
    shipped = (REPO / "hf_distill" / cli_help.OPTIONS_FILE).read_text(encoding="utf-8")
    if OTHER_TRANSFORMERS:
        if own_options(described["dataclasses"]) != own_options(SHIPPED["dataclasses"]):
            pytest.fail(
                f"hf_distill/{cli_help.OPTIONS_FILE} does not match hf_distill's own options: regenerate it with "
                f"`{cli_options.REGENERATE}`"
            )
        return
    if cli_options.render(described) != shipped:
        old = json.loads(shipped)
        changed = [
            name for name, options in described["dataclasses"].items() if options != old["dataclasses"].get(name)
        ]
        changed += [name for name in old["dataclasses"] if name not in described["dataclasses"]]
        changed += [name for name in ("transformers", "commands") if described[name] != old.get(name)]
        pytest.fail(
            f"hf_distill/{cli_help.OPTIONS_FILE} does not match the options' dataclasses (changed: "
            f"{', '.join(changed) or 'formatting'}): regenerate it with `{cli_options.REGENERATE}`"
        )


@pytest.mark.parametrize("command", COMMANDS)
def test_help_from_the_file_is_the_parsers_help(command, capsys):
    real = cli.command_parser(command)
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == real.format_help()
    # Every flag the real parser takes, with what its help shows of it (the equality above holds at any width).
    if not OTHER_TRANSFORMERS:
        assert flags(cli_help.help_parser(command)) == flags(real)


def flags(parser) -> dict:
    return {
        flag: {
            "dest": action.dest,
            "help": action.help,
            "nargs": action.nargs,
            "required": action.required,
            "default": str(action.default),
            "choices": None if action.choices is None else [str(choice) for choice in action.choices],
        }
        for action in parser._actions
        for flag in action.option_strings
    }


@pytest.mark.skipif(
    OTHER_TRANSFORMERS,
    reason=f"hf_distill/{cli_help.OPTIONS_FILE} was written with another transformers: the help comes from the "
    f"dataclasses until `{cli_options.REGENERATE}`",
)
def test_help_does_not_import_torch_or_transformers():
    code = (
        "import sys, hf_distill.cli\n"
        f"for command in {COMMANDS!r}:\n"
        "    try:\n"
        "        hf_distill.cli.main([command, '--help'])\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, (command, exit.code)\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'accelerate', 'pandas') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout[-500:]
    assert "--temperature" in result.stdout and "--cache_dir" in result.stdout and "--repo_id" in result.stdout


def test_another_transformers_takes_the_parsers_help(monkeypatch, capsys):
    # The file was written with the installed transformers; another one's TrainingArguments may differ.
    monkeypatch.setattr(cli_help, "installed_transformers", lambda: "0.0.0")
    assert cli_help.help_parser("train") is None
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert capsys.readouterr().out == cli.command_parser("train").format_help()


def test_a_recipe_takes_the_parsers_help(capsys):
    # The help then shows the recipe's values as the defaults, as before.
    with pytest.raises(SystemExit):
        main(["train", "tweets", "--help"])
    assert "(default: tweets-student)" in " ".join(capsys.readouterr().out.split())  # argparse wraps the text


def test_the_options_file_is_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["hf_distill"]
    shipped = {path.resolve() for pattern in patterns for path in (REPO / "hf_distill").glob(pattern)}
    assert (REPO / "hf_distill" / cli_help.OPTIONS_FILE).resolve() in shipped
