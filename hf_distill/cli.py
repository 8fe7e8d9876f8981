"""The `hf-distill` command.

    hf-distill train [RECIPE.yaml] [--flag value ...]   distil a teacher into a student, evaluate, save, write a card
                                                          (--task: the teacher's task unless given)
    hf-distill cache [RECIPE.yaml] --cache_dir DIR [--top_k K] [--hidden_layers 2,4,6]
                                                          run the teacher once over the recipe's training data and
                                                          store its outputs; then `train RECIPE --teacher_cache DIR`
    hf-distill student --teacher_model_name_or_path T --output_dir S [--student_num_layers K ...]
                                                          only build and save a student from a teacher
    hf-distill push OUTPUT_DIR --repo_id NAME [--private] [--revision B] [--token T] [--endpoint URL]
                                                          publish a saved student (one commit)

Options come from the dataclasses through `HfArgumentParser`, as in the Hugging Face example scripts: every field of
`DistillationConfig` (and so of `TrainingArguments`), `DataArguments`, each registered task's own `data_arguments`,
`StudentArguments` and `MeasureArguments` is a flag, and a YAML recipe can hold them all; flags given after the recipe
override it.

Several processes or GPUs: `accelerate launch [--config_file examples/accelerate_configs/multi_gpu.yaml] -m
hf_distill.cli train RECIPE.yaml [--flags]` (or `examples/distill.py`, the same command as a script).
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import yaml
from transformers import HfArgumentParser

from .cache import CacheArguments
from .config import DistillationConfig
from .data import DataArguments
from .measure import MeasureArguments
from .run import StudentArguments, build_cache, make_student, run_distillation
from .tasks import TASKS
from .teacher import load_model, load_tokenizer

COMMANDS = {
    "train": "distil a teacher into a student on a dataset (text or token classification, question answering, "
    "masked or causal LM); evaluate, save the student folder and its model card",
    "cache": "run the teacher once over the training data and store its outputs (logits, or top-k, and hidden "
    "states) for `train --teacher_cache`",
    "student": "build a DistilBERT-style student from a teacher (fewer layers, copied weights) and save it",
    "push": "publish a saved student folder to the Hub in one commit (weights, config, tokenizer, card, metrics)",
}


@dataclass
class StudentOutputArguments:
    teacher_model_name_or_path: str = field(metadata={"help": "The teacher: a model folder or Hub id."})
    output_dir: str = field(metadata={"help": "Where to save the student (model, config and tokenizer)."})


@dataclass
class PushArguments:
    folder: str = field(metadata={"help": "The saved student folder (written by `hf-distill train` or save_model)."})
    repo_id: str = field(metadata={"help": "The Hub model repo, `namespace/name`; created if it does not exist."})
    private: bool | None = field(
        default=None, metadata={"help": "Create the repo private (an existing repo keeps its visibility)."}
    )
    revision: str | None = field(
        default=None, metadata={"help": "Branch to commit to (default main); created if needed."}
    )
    commit_message: str | None = field(default=None, metadata={"help": "Commit message."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN, then `hf auth login`)."})
    endpoint: str | None = field(default=None, metadata={"help": "Hub endpoint (default: HF_ENDPOINT, else the Hub)."})
    create_pr: bool = field(default=False, metadata={"help": "Open a pull request instead of committing."})


def parse_with_recipe(parser: HfArgumentParser, argv: Sequence[str]) -> tuple:
    """Parses `[recipe.yaml] [--flags]`: the recipe's values become defaults, flags override them."""
    argv = list(argv)
    if argv and argv[0].endswith((".yaml", ".yml")) and not argv[0].startswith("-"):
        recipe_path = argv.pop(0)
        if not os.path.isfile(recipe_path):
            raise SystemExit(f"hf-distill: recipe {recipe_path!r} does not exist")
        with open(recipe_path) as handle:
            recipe = yaml.safe_load(handle) or {}
        if not isinstance(recipe, dict):
            raise SystemExit(f"hf-distill: recipe {recipe_path!r} must be a mapping of option: value")
        options = {action.dest for action in parser._actions}
        for key in recipe:
            if key not in options:
                close = difflib.get_close_matches(str(key), options, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise SystemExit(
                    f"hf-distill: {recipe_path}: {key!r} is not an option of this command{hint} "
                    "(see --help for the options)"
                )
        parser.set_defaults(**recipe)
        # Required options given by the recipe are no longer required on the command line.
        for action in parser._actions:
            if action.dest in recipe:
                action.required = False
    return parser.parse_args_into_dataclasses(args=argv)


def task_argument_classes() -> list[type]:
    """The own data-argument dataclasses of the registered tasks, each once (two tasks may share one)."""
    classes = []
    for task in TASKS.values():
        if task.data_arguments is not None and task.data_arguments not in classes:
            classes.append(task.data_arguments)
    return classes


def run_parser(prog: str, *extra: type) -> HfArgumentParser:
    """The options of a run (`train`, and `cache` with its own `extra` options): student, data (with the task), each
    task's own data arguments, measurement and distillation settings."""
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


def train(argv: Sequence[str]):
    parser = run_parser("hf-distill train")
    parser.description = COMMANDS["train"]
    student_args, data_args, task_args, measure_args, config = _split_run_arguments(parse_with_recipe(parser, argv))
    result = run_distillation(student_args, data_args, config, measure_args, task_args=task_args)
    if result.summary:
        print(result.summary)
    return result


def cache(argv: Sequence[str]):
    parser = run_parser("hf-distill cache", CacheArguments)
    parser.description = COMMANDS["cache"]
    student_args, data_args, task_args, _, config, cache_args = _split_run_arguments(parse_with_recipe(parser, argv))
    built = build_cache(student_args, data_args, config, cache_args, task_args=task_args)
    settings = built.settings
    stored = (
        f"top-{settings['top_k']} log-probabilities at T={settings['temperature']}"
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
    parser = HfArgumentParser((StudentOutputArguments, StudentArguments), prog="hf-distill student")
    parser.description = COMMANDS["student"]
    output_args, student_args = parse_with_recipe(parser, argv)
    teacher = load_model(output_args.teacher_model_name_or_path)
    tokenizer = load_tokenizer(student_args.tokenizer_name or output_args.teacher_model_name_or_path)
    built = make_student(teacher, student_args)
    built.save_pretrained(output_args.output_dir)
    tokenizer.save_pretrained(output_args.output_dir)
    print(
        f"Saved a {built.config.num_hidden_layers}-layer student (teacher layers "
        f"{built.config.distillation_teacher_layers}, {built.num_parameters():,} parameters; teacher "
        f"{teacher.num_parameters():,}) to {output_args.output_dir}"
    )
    return output_args.output_dir


def push(argv: Sequence[str]) -> str:
    # The folder may come first, as a positional argument: `hf-distill push OUTPUT_DIR --repo_id NAME`.
    argv = list(argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--folder", argv[0], *argv[1:]]
    parser = HfArgumentParser(PushArguments, prog="hf-distill push")
    parser.description = COMMANDS["push"]
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    from .hub import push_student

    url = push_student(
        args.folder,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        token=args.token,
        endpoint=args.endpoint,
        create_pr=args.create_pr,
    )
    print(f"Pushed {args.folder} to {args.repo_id}: {url}")
    return url


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: hf-distill COMMAND [options]\n\ncommands:")
        for name, text in COMMANDS.items():
            print(f"  {name:10s} {text}")
        print("\nRun `hf-distill COMMAND --help` for the options of a command.")
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise SystemExit(f"hf-distill: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}")
    {"train": train, "cache": cache, "student": student, "push": push}[command](rest)


if __name__ == "__main__":
    main()
