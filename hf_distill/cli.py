"""The `hf-distill` command.

    hf-distill train [RECIPE | --config RECIPE] [--flag value ...]
                                                          distil a teacher into a student, evaluate, save, write a card
                                                          (--task: the teacher's task unless given)
    hf-distill cache [RECIPE | --config RECIPE] --cache_dir DIR [--top_k K | --logit_samples N] [--hidden_layers 2,4,6]
                                                          run the teacher once over the recipe's training data and
                                                          store its outputs; then `train RECIPE --teacher_cache DIR`
    hf-distill student --teacher_model_name_or_path T --output_dir S [--student_num_layers K ...]
                                                          only build and save a student from a teacher
    hf-distill compress --student_model_name_or_path S --output_dir O --train_file F --test_file T
                        [--teacher_model_name_or_path T] [--formats int8,onnx,onnx-int8]
                                                          export the student (int8, onnx, onnx-int8), one folder each,
                                                          measured against the student and teacher, with its card
    hf-distill push OUTPUT_DIR --repo_id NAME [--private] [--revision B] [--token T] [--endpoint URL]
                                                          publish a saved student (one commit)
    hf-distill configs [NAME]                             the packaged recipes and Accelerate configs (their paths)

Options come from the dataclasses through `HfArgumentParser`, as in the Hugging Face example scripts: every field of
`DistillationConfig` (and so of `TrainingArguments`), `DataArguments`, each registered task's own `data_arguments`,
`StudentArguments` and `MeasureArguments` is a flag, and a YAML recipe can hold them all; flags given after the recipe
override it. The recipe is the first argument or `--config RECIPE` (as TRL's and transformers' scripts take it): a
YAML file, or the name of a recipe shipped in the package (`hf-distill configs` lists them).

Errors: a usage mistake (an unknown flag, a bad value, a recipe problem) prints argparse's usage line and
`hf-distill COMMAND: error: ...` and exits with 2; an error raised by the run itself (a missing teacher, a bad data
file, ...) prints `hf-distill: error: MESSAGE` and exits with 1. `--log_level debug` (or `HF_DISTILL_TRACEBACK=1`)
prints its traceback too. Ctrl-C exits with 130.

Several processes or GPUs: `accelerate launch --config_file "$(hf-distill configs multi_gpu)" -m hf_distill.cli train
RECIPE [--flags]` (or `examples/distill.py`, the same command as a script).

Nothing heavy (torch, datasets, transformers) is imported before a command needs it, so `hf-distill --help` and
`hf-distill configs` answer at once; so does `hf-distill COMMAND --help`, printed from the options file that
`hf_distill/cli_options.py` writes from the dataclasses and ships in the package.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.resources
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .cli_help import help_parser

COMMANDS = {
    "train": "distil a teacher into a student on a dataset (text or token classification, question answering, "
    "masked or causal LM); evaluate, save the student folder and its model card",
    "cache": "run the teacher once over the training data and store its outputs (logits, or top-k, and hidden "
    "states) for `train --teacher_cache`",
    "student": "build a DistilBERT-style student from a teacher (fewer layers, copied weights) and save it",
    "compress": "export a distilled student for CPU inference (int8, ONNX, ONNX int8), one folder per export, "
    "each measured against the float student and the teacher, with its card",
    "push": "publish a saved student folder to the Hub in one commit (weights, config, tokenizer, card, metrics)",
    "configs": "list the packaged recipes and Accelerate configs with their paths; `configs NAME` prints one path",
}

# Set to 1 to print the traceback of an error raised by a run (as `--log_level debug` does).
TRACEBACK_ENV = "HF_DISTILL_TRACEBACK"
# Folders of the package that hold YAML files for users: recipes for `train`/`cache`, configs for `accelerate launch`.
PACKAGED_KINDS = {"recipes": "recipe", "accelerate_configs": "Accelerate config"}

# The usage line of each command that has options, and whether it takes a recipe (its help then explains recipes).
USAGES = {
    "train": ("hf-distill train [RECIPE | --config RECIPE] [--option VALUE ...]", True),
    "cache": ("hf-distill cache [RECIPE | --config RECIPE] --cache_dir DIR [--option VALUE ...]", True),
    "student": (
        "hf-distill student [RECIPE | --config RECIPE] --teacher_model_name_or_path T --output_dir S "
        "[--option VALUE ...]",
        True,
    ),
    "compress": (
        "hf-distill compress --student_model_name_or_path S --output_dir O --train_file F --test_file T "
        "[--option VALUE ...]",
        False,
    ),
    "push": ("hf-distill push FOLDER --repo_id NAME [--option VALUE ...]", False),
}

_RECIPE_HELP = (
    "RECIPE (or --config RECIPE, as TRL's and transformers' scripts take it) is a YAML file of `option: value` lines, "
    "or the name of a recipe shipped with hf-distill (`hf-distill configs` lists them). Every option below can be in "
    "the recipe; flags given on the command line override it. Quote YAML values that should stay text: "
    'save_strategy: "no", layer_map: "12:6".'
)
_ERRORS_HELP = (
    "A usage mistake exits with 2; an error of the run prints `hf-distill: error: MESSAGE` and exits with 1 "
    f"(`--log_level debug` or {TRACEBACK_ENV}=1 adds the traceback)."
)


@dataclass
class StudentOutputArguments:
    teacher_model_name_or_path: str = field(metadata={"help": "The teacher: a model folder or Hub id."})
    output_dir: str = field(metadata={"help": "Where to save the student (model, config and tokenizer)."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Write into an output_dir that already holds files this tool did not write. A teacher's folder "
            "is refused even with it."
        },
    )


@dataclass
class PushFolderArguments:
    """What `hf-distill push` publishes and where; how is [`hub.PushArguments`]."""

    folder: str = field(metadata={"help": "The saved student folder (written by `hf-distill train` or save_model)."})
    repo_id: str = field(metadata={"help": "The Hub model repo, `namespace/name`; created if it does not exist."})


# --- packaged recipes and Accelerate configs -------------------------------------------------------------------------


def packaged_configs(kind: str = "recipes") -> dict[str, Path]:
    """The YAML files shipped in the package, by name (file name without `.yaml`).

    Args:
        kind (`str`): `"recipes"` (for `hf-distill train NAME`) or `"accelerate_configs"` (for `accelerate launch
            --config_file PATH`).
    """
    if kind not in PACKAGED_KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of: {', '.join(PACKAGED_KINDS)}")
    folder = importlib.resources.files("hf_distill").joinpath(kind)
    if not folder.is_dir():
        return {}
    files = (entry for entry in folder.iterdir() if entry.name.endswith(".yaml"))
    return {entry.name.removesuffix(".yaml"): Path(str(entry)) for entry in sorted(files, key=lambda e: e.name)}


def resolve_recipe(name_or_path: str) -> Path:
    """A recipe file: `name_or_path` when it is a file, else the packaged recipe of that name (`tweets`).

    Raises:
        `FileNotFoundError`: naming the path and the packaged recipes.
    """
    if os.path.isfile(name_or_path):
        return Path(name_or_path)
    recipes = packaged_configs("recipes")
    name = name_or_path.removesuffix(".yaml").removesuffix(".yml")
    if name in recipes:  # a bare name: no folder part can match a key
        return recipes[name]
    close = difflib.get_close_matches(name, recipes, n=1)
    hint = f"; did you mean the packaged recipe {close[0]!r}?" if close else ""
    raise FileNotFoundError(
        f"recipe {name_or_path!r} does not exist: give a YAML file, or the name of a packaged recipe "
        f"({', '.join(recipes) or 'none'}){hint}"
    )


# --- parsing -----------------------------------------------------------------------------------------------------


def _usage_parser(prog: str) -> argparse.ArgumentParser:
    # Only for its `error()`: the usage line and `prog: error: message`, exit status 2.
    return argparse.ArgumentParser(prog=prog, usage=f"{prog} COMMAND [options]", add_help=False)


def _split_recipe(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[str | None, list[str]]:
    """(the recipe named by the first argument or by `--config`, the other arguments)."""
    named, rest = [], []
    if argv and not argv[0].startswith("-"):
        named.append(argv[0])
        argv = argv[1:]
    arguments = iter(argv)
    for argument in arguments:
        if argument == "--config":
            value = next(arguments, None)
            if value is None or value.startswith("-"):
                parser.error("argument --config: expected a recipe (a YAML file or a packaged recipe's name)")
            named.append(value)
        elif argument.startswith("--config="):
            named.append(argument.split("=", 1)[1])
        else:
            rest.append(argument)
    if len(named) > 1:
        parser.error(f"give one recipe, not {len(named)} ({', '.join(named)}): flags after it override its values")
    return (named[0] if named else None), rest


def read_recipe(parser: argparse.ArgumentParser, name_or_path: str) -> dict:
    """The recipe's `option: value` pairs, checked against the parser's options: an unknown key (with a did-you-mean)
    or a value whose YAML type does not fit the option (`save_strategy: no` read as the boolean false) is a usage
    error naming the key, the value as YAML read it, and the fix."""
    import yaml

    try:
        path = resolve_recipe(name_or_path)
    except FileNotFoundError as error:
        parser.error(str(error))
    text = path.read_text()
    try:
        recipe = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        parser.error(f"recipe {str(path)!r} is not valid YAML ({where}{getattr(error, 'problem', None) or error})")
    if recipe is None:
        return {}
    if not isinstance(recipe, dict):
        parser.error(f"recipe {str(path)!r} must be a mapping of `option: value` lines, not a {type(recipe).__name__}")
    written = {}  # key -> (the value as written, line number)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            text_value = value_node.value if isinstance(value_node, yaml.ScalarNode) else None
            written[key_node.value] = (text_value, value_node.start_mark.line + 1)
    actions = _actions_by_dest(parser)
    containers = _container_types(parser)
    values = {}
    for key, value in recipe.items():
        if key not in actions:
            close = difflib.get_close_matches(str(key), actions, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            parser.error(f"{path}: {key!r} is not an option of this command{hint} (see --help for the options)")
        as_written, line = written.get(str(key), (None, None))
        where = f"{path}, line {line}" if line else str(path)
        if isinstance(value, (list, dict)) and type(value) in containers.get(key, ()):
            values[key] = value  # a list or mapping where the option's field takes one (report_to, peft_config)
        else:
            values[key] = _recipe_value(parser, actions[key], key, value, as_written, where)
    return values


def _actions_by_dest(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    # A boolean option that defaults to true also has a `--no_X` action storing into X: keep the `--X` one.
    actions = {}
    for action in parser._actions:
        if action.option_strings and not isinstance(action, (argparse._StoreFalseAction, argparse._HelpAction)):
            actions.setdefault(action.dest, action)
    return actions


def _container_types(parser) -> dict[str, set[type]]:
    """For each option, `list` and/or `dict` when its dataclass field takes one (e.g. `dict | str | None`): read from
    the fields' annotations, since the parser's actions only keep the type a command-line string converts to."""
    import typing

    containers = {}
    for dataclass_type in getattr(parser, "dataclass_types", ()):
        for name, annotation in typing.get_type_hints(dataclass_type).items():
            kinds = {typing.get_origin(arg) or arg for arg in typing.get_args(annotation) or (annotation,)}
            kinds.add(typing.get_origin(annotation) or annotation)
            containers[name] = {kind for kind in (list, dict) if kind in kinds}
    return containers


def _recipe_value(parser, action: argparse.Action, key: str, value, as_written: str | None, where: str):
    """The recipe value to give the parser as the option's default, or a usage error saying how to write it."""
    if value is None:
        return value
    kind = _kind(action)
    shown = as_written if as_written is not None else _flow_yaml(value)
    read_as = _read_as(value)
    quoted = f'{key}: "{shown}"'

    def refuse(expected: str, fix: str) -> None:
        parser.error(f"{where}: `{key}: {shown}` is read by YAML as {read_as}, but {key} takes {expected}; {fix}")

    if kind == "text":
        choices = _choices(action)
        expected = f"one of: {', '.join(choices)}" if choices else "text"
        if isinstance(value, bool) or isinstance(value, (int, float)) and str(value) != as_written:
            refuse(expected, f"quote it to keep it as written: {quoted}")
        if isinstance(value, (list, dict)):
            refuse(expected, "give a single value")
        value = str(value)
        if choices and value not in choices:
            parser.error(f"{where}: `{key}: {shown}` is not one of: {', '.join(choices)}")
        return value
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return action.type(value)
            except (argparse.ArgumentTypeError, ValueError):
                pass
        refuse("true or false", f"write {key}: true or {key}: false")
    if kind in ("integer", "number"):
        if isinstance(value, bool) or isinstance(value, (list, dict)):
            refuse(f"{'an' if kind == 'integer' else 'a'} {kind}", "write a number")
        if isinstance(value, str):
            try:
                action.type(value)
            except ValueError:
                refuse(f"{'an' if kind == 'integer' else 'a'} {kind}", "write a number")
            return value
        if kind == "integer" and isinstance(value, float):
            if not value.is_integer():
                refuse("an integer", f"write a whole number, e.g. {key}: {round(value)}")
            return int(value)
        return value
    return value


def _flow_yaml(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _kind(action: argparse.Action) -> str:
    from transformers.hf_argparser import string_to_bool

    if action.type is string_to_bool:
        return "boolean"
    if action.choices:
        return "text"
    if action.type is int:
        return "integer"
    if action.type is float:
        return "number"
    if action.type is str:
        return "text"
    return "other"


def _choices(action: argparse.Action) -> list[str]:
    return [str(choice) for choice in action.choices] if action.choices else []


def _read_as(value) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"the text {value!r}"


def parse_with_recipe(parser, argv: Sequence[str]) -> tuple:
    """Parses `[RECIPE] [--config RECIPE] [--flags]`: the recipe's values become defaults, flags override them.

    Any mistake (an unknown flag or recipe key, a value the options' dataclasses refuse, a missing recipe) ends in
    argparse's `error:` (usage line, message, exit status 2).
    """
    recipe_name, argv = _split_recipe(parser, list(argv))
    if recipe_name is not None:
        recipe = read_recipe(parser, recipe_name)
        parser.set_defaults(**recipe)
        # Required options given by the recipe are no longer required on the command line.
        for action in parser._actions:
            if action.dest in recipe:
                action.required = False
    return parse_arguments(parser, argv)


def parse_arguments(parser, argv: Sequence[str]) -> tuple:
    """`parser.parse_args_into_dataclasses(argv)`, with unknown flags and the dataclasses' own refusals (a
    `ValueError` from `__post_init__`) reported as argparse errors."""
    # Unknown flags first: a misspelt flag (`--trian_file`) would otherwise surface as the refusal it causes.
    _, remaining = parser.parse_known_args(list(argv))
    if remaining:
        flags = [option for action in parser._actions for option in action.option_strings]
        hints = []
        for argument in remaining:
            if argument.startswith("--"):
                close = difflib.get_close_matches(argument.split("=", 1)[0], flags, n=1)
                if close:
                    hints.append(f"{argument}: did you mean {close[0]}?")
        parser.error(f"unrecognized arguments: {' '.join(remaining)}" + (f" ({'; '.join(hints)})" if hints else ""))
    try:
        return tuple(parser.parse_args_into_dataclasses(args=list(argv), look_for_args_file=False))
    except ValueError as error:
        parser.error(str(error))


def _describe(parser, command: str) -> None:
    usage, recipe = USAGES[command]
    parser.usage = usage
    parser.description = COMMANDS[command] + (". " + _RECIPE_HELP if recipe else ".")
    parser.epilog = _ERRORS_HELP


def task_argument_classes() -> list[type]:
    """The own data-argument dataclasses of the registered tasks, each once (two tasks may share one)."""
    # Imported here, not at the top, for start-up time: it imports torch and transformers.
    from .tasks import TASKS

    classes = []
    for task in TASKS.values():
        if task.data_arguments is not None and task.data_arguments not in classes:
            classes.append(task.data_arguments)
    return classes


def run_parser(prog: str, *extra: type):
    """The options of a run (`train`, and `cache` with its own `extra` options): student, data (with the task), each
    task's own data arguments, measurement and distillation settings."""
    from transformers import HfArgumentParser

    # Imported here, not at the top, for start-up time: it imports torch and transformers.
    from .config import DistillationConfig
    from .data import DataArguments
    from .measure import MeasureArguments
    from .run import StudentArguments

    return HfArgumentParser(
        (
            StudentArguments,
            DataArguments,
            *task_argument_classes(),
            MeasureArguments,
            DistillationConfig,
            *extra,
        ),
        prog=prog,
    )


def _split_run_arguments(parsed: Sequence, extra: int = 0) -> tuple:
    """(student, data, task data arguments, measure, config, *extra) from a `run_parser` parse."""
    parsed = list(parsed)
    count = len(task_argument_classes())
    student_args, data_args, task_args = parsed[0], parsed[1], parsed[2 : 2 + count]
    measure_args, config, *rest = parsed[2 + count :]
    return student_args, data_args, task_args, measure_args, config, *rest


def command_parser(command: str):
    """The `HfArgumentParser` of `hf-distill COMMAND` (a command of [`USAGES`]) over its options' dataclasses, with
    the command's usage, description and epilog. Building it imports torch and transformers (seconds)."""
    from transformers import HfArgumentParser

    prog = f"hf-distill {command}"
    if command == "train":
        parser = run_parser(prog)
    elif command == "cache":
        # Imported here, not at the top, for start-up time: it imports torch and transformers.
        from .cache import CacheArguments

        parser = run_parser(prog, CacheArguments)
    elif command == "student":
        # Imported here, not at the top, for start-up time: it imports torch and transformers.
        from .run import StudentArguments

        parser = HfArgumentParser((StudentOutputArguments, StudentArguments), prog=prog)
    elif command == "compress":
        # Imported here, not at the top, for start-up time: it imports torch and transformers.
        from .compress import CompressArguments
        from .data import DataArguments

        parser = HfArgumentParser((CompressArguments, DataArguments, *task_argument_classes()), prog=prog)
    elif command == "push":
        from .hub import PushArguments

        parser = HfArgumentParser((PushFolderArguments, PushArguments), prog=prog)
    else:
        raise ValueError(f"hf-distill {command!r} has no options parser; the commands with one: {', '.join(USAGES)}")
    _describe(parser, command)
    return parser


# --- the commands ------------------------------------------------------------------------------------------------


def train(argv: Sequence[str]):
    # Imported here, not at the top, for start-up time: it imports torch and transformers.
    from .run import run_distillation

    parser = command_parser("train")
    student_args, data_args, task_args, measure_args, config = _split_run_arguments(parse_with_recipe(parser, argv))
    result = run_distillation(student_args, data_args, config, measure_args, task_args=task_args)
    if result.summary:
        print(result.summary)
    return result


def cache(argv: Sequence[str]):
    # Imported here, not at the top, for start-up time: it imports torch and transformers.
    from .run import build_cache

    parser = command_parser("cache")
    student_args, data_args, task_args, _, config, cache_args = _split_run_arguments(parse_with_recipe(parser, argv))
    built = build_cache(student_args, data_args, config, cache_args, task_args=task_args)
    settings = built.settings
    stored = (
        f"{settings['logit_samples']} draws per position from the probabilities at T={settings['temperature']}"
        if settings.get("logit_samples")
        else f"top-{settings['top_k']} log-probabilities at T={settings['temperature']}"
        if settings["top_k"]
        else "all logits"
    )
    hidden = (
        f", hidden states {settings['hidden_layers']} ({settings['hidden_dtype']})"
        if settings["hidden_layers"]
        else ""
    )
    print(
        f"Teacher cache {built.path}: {len(built)} examples, {stored}{hidden}, {built.size_bytes() / 2**20:.1f} MB. "
        f"Train with --teacher_cache {built.path}"
    )
    return built


def student(argv: Sequence[str]) -> str:
    # Imported here, not at the top, for start-up time: it imports torch and transformers.
    from .output_folders import check_output_dir
    from .run import make_student
    from .teacher import load_model, load_tokenizer

    parser = command_parser("student")
    output_args, student_args = parse_with_recipe(parser, argv)
    check_output_dir(
        output_args.output_dir,
        protected=[output_args.teacher_model_name_or_path],
        overwrite=output_args.overwrite_output_dir,
    )
    teacher = load_model(output_args.teacher_model_name_or_path)
    tokenizer = load_tokenizer(student_args.tokenizer_name or output_args.teacher_model_name_or_path, teacher)
    built = make_student(teacher, student_args)
    built.save_pretrained(output_args.output_dir)
    tokenizer.save_pretrained(output_args.output_dir)
    print(
        f"Saved a {built.config.num_hidden_layers}-layer student (teacher layers "
        f"{built.config.distillation_teacher_layers}, {built.num_parameters():,} parameters; teacher "
        f"{teacher.num_parameters():,}) to {output_args.output_dir}"
    )
    return output_args.output_dir


def compress(argv: Sequence[str]) -> dict:
    # Imported here, not at the top, for start-up time: it imports torch and transformers.
    from .compress import format_table, run_compress

    parser = command_parser("compress")
    args, data_args, *task_args = parse_arguments(parser, argv)
    metrics = run_compress(args, data_args, task_args)
    print(format_table(metrics))
    print(f"Exports written to {', '.join(os.path.join(args.output_dir, fmt) for fmt in args.formats)}")
    return metrics


def push(argv: Sequence[str]) -> str:
    # The folder may come first, as a positional argument: `hf-distill push OUTPUT_DIR --repo_id NAME`.
    argv = list(argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--folder", argv[0], *argv[1:]]
    parser = command_parser("push")
    target, settings = parse_arguments(parser, argv)
    # Imported here, not at the top, for start-up time: it imports torch and transformers.
    from .hub import push_student

    url = push_student(target.folder, target.repo_id, settings)
    print(f"Pushed {target.folder} to {target.repo_id}: {url}")
    return url


def configs(argv: Sequence[str]) -> dict[str, Path]:
    """`hf-distill configs`: every packaged recipe and Accelerate config with its path; `configs NAME`: that path
    alone (for `--config_file "$(hf-distill configs multi_gpu)"`)."""
    parser = argparse.ArgumentParser(prog="hf-distill configs", description=COMMANDS["configs"])
    parser.add_argument("name", nargs="?", help="print only the path of this recipe or Accelerate config")
    args = parser.parse_args(list(argv))
    found = {kind: packaged_configs(kind) for kind in PACKAGED_KINDS}
    every = {name: path for files in found.values() for name, path in files.items()}
    if args.name is not None:
        name = args.name.removesuffix(".yaml")
        if name not in every:
            close = difflib.get_close_matches(name, every, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            parser.error(
                f"no packaged recipe or Accelerate config named {args.name!r}{hint} (choose: {', '.join(every)})"
            )
        print(every[name])
        return {name: every[name]}
    print("Recipes (hf-distill train NAME, or --config NAME; copy one to change it):")
    for name, path in found["recipes"].items():
        print(f"  {name:18s} {path}")
    print('Accelerate configs (accelerate launch --config_file "$(hf-distill configs NAME)" -m hf_distill.cli ...):')
    for name, path in found["accelerate_configs"].items():
        print(f"  {name:18s} {path}")
    return every


_COMMAND_FUNCTIONS: dict[str, Callable[[Sequence[str]], object]] = {
    "train": train,
    "cache": cache,
    "student": student,
    "compress": compress,
    "push": push,
    "configs": configs,
}


def _print_help() -> None:
    print("usage: hf-distill COMMAND [options]\n\ncommands:")
    for name, text in COMMANDS.items():
        print(f"  {name:10s} {text}")
    print(
        "\nRun `hf-distill COMMAND --help` for the options of a command. Several processes or GPUs: "
        "accelerate launch [--config_file FILE] -m hf_distill.cli COMMAND [options].\n" + _ERRORS_HELP
    )


def run_command(argv: Sequence[str]):
    """Runs `hf-distill COMMAND [options]` and returns what the command returns; errors propagate (a usage mistake
    as argparse's `SystemExit(2)`). [`main`] is this with errors printed for people."""
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        _print_help()
        return None
    if argv[0] == "--version":
        print(f"hf-distill {__version__}")
        return None
    command, rest = argv[0], argv[1:]
    if command not in _COMMAND_FUNCTIONS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        _usage_parser("hf-distill").error(f"unknown command {command!r}{hint} (choose one of: {', '.join(COMMANDS)})")
    _help_from_options_file(command, rest)
    return _COMMAND_FUNCTIONS[command](rest)


def _help_from_options_file(command: str, argv: Sequence[str]) -> None:
    """`hf-distill COMMAND --help` printed from the options shipped with the package (`hf_distill/cli_help.py`):
    the command's parser's help without importing torch and transformers to build that parser. Exits with 0 once
    printed, as argparse's `--help` does. Returns, leaving the help to the command's own parser, when a recipe is
    named (the help then shows the recipe's values as the defaults) or the file cannot describe the command."""
    if command not in USAGES or not {"-h", "--help"} & set(argv):
        return
    takes_recipe = USAGES[command][1]
    names_recipe = (argv and not argv[0].startswith("-")) or any(
        argument == "--config" or argument.startswith("--config=") for argument in argv
    )
    if takes_recipe and names_recipe:
        return
    parser = help_parser(command)
    if parser is None:
        return
    _describe(parser, command)
    parser.print_help()
    parser.exit()


def _wants_traceback(argv: Sequence[str]) -> bool:
    if os.environ.get(TRACEBACK_ENV, "").lower() in ("1", "true", "yes"):
        return True
    argv = list(argv)
    level = None  # the last --log_level wins, as in argparse; the recipe's counts only without one
    for i, argument in enumerate(argv):
        if argument == "--log_level" and i + 1 < len(argv):
            level = argv[i + 1]
        elif argument.startswith("--log_level="):
            level = argument.split("=", 1)[1]
    if level is not None:
        return level == "debug"
    # The recipe's log_level (a recipe that cannot be read never got this far).
    try:
        import yaml

        recipe_name, _ = _split_recipe(_usage_parser("hf-distill"), argv[1:])
        recipe = yaml.safe_load(resolve_recipe(recipe_name).read_text()) if recipe_name else None
    except (SystemExit, Exception):
        return False
    return isinstance(recipe, dict) and recipe.get("log_level") == "debug"


def _message(error: BaseException) -> str:
    # One line: a multi-line message (transformers' "couldn't connect ... / Check your internet ...") is joined.
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or error.__class__.__name__
    # The library's own refusals say what was wrong and how to fix it; anything else may be a bug: name its type.
    if not isinstance(error, (ValueError, OSError, RuntimeError)):
        text = f"{error.__class__.__name__}: {text} (rerun with {TRACEBACK_ENV}=1 for the traceback)"
    return text


def main(argv: Sequence[str] | None = None) -> None:
    """The `hf-distill` command: [`run_command`] with errors printed for people.

    An error raised by the run prints `hf-distill: error: MESSAGE` (its traceback too under `--log_level debug` or
    `HF_DISTILL_TRACEBACK=1`) and exits with 1; Ctrl-C exits with 130; usage mistakes exit with 2 (argparse).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run_command(argv)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as error:
        if _wants_traceback(argv):
            traceback.print_exc()
        print(f"hf-distill: error: {_message(error)}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        _end_process_group()


def _end_process_group() -> None:
    """Under `accelerate launch` / torchrun, tears the process group down before the interpreter exits: left to
    interpreter shutdown, gloo's threads can abort a finished run ("terminate called without an active exception")."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


if __name__ == "__main__":
    main()
