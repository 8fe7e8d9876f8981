"""Writes `cli_options.json`: the options of the `hf-distill` commands as data, so that `hf-distill COMMAND --help`
answers at once ([`~hf_distill.cli_help.help_parser`] reads the file back).

A command's options are the fields of its dataclasses (most of them `TrainingArguments`'), and building their
`HfArgumentParser` imports torch, transformers and datasets: seconds before a word of help. `cli_options.json`, shipped
in the package, holds every option of each command's parser as that parser has it (flags, type, default, choices,
help, the help section it is listed in), read here from the real parsers ([`describe_commands`]). Running a command
still parses with `HfArgumentParser` over the dataclasses.

After changing an option (or upgrading transformers), regenerate the file with

    python -m hf_distill.cli_options --write

(`tests/test_cli_options.py` fails until it matches). When the installed transformers is not the one the file was
written with, the help comes from the dataclasses, as a run's parsing does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .cli import USAGES, command_parser
from .cli_help import OPTIONS_FILE, installed_transformers

REGENERATE = "python -m hf_distill.cli_options --write"


def describe_commands() -> dict:
    """Every option of every command of `hf_distill.cli.USAGES`, read from the command's real parser: for each
    dataclass (once, however many commands take it) its options in the parser's order, and for each command its
    dataclasses in order."""
    commands, described = {}, {}
    for command in USAGES:
        parser = command_parser(command)
        owner = {field.name: _name(cls) for cls in parser.dataclass_types for field in dataclasses.fields(cls)}
        group = {id(action): group.title for group in parser._action_groups for action in group._group_actions}
        commands[command] = [_name(cls) for cls in parser.dataclass_types]
        new = {name: [] for name in commands[command] if name not in described}
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or owner[action.dest] not in new:
                continue
            if not action.option_strings:
                raise ValueError(f"{command}: {action.dest!r} is a positional argument; describe_commands takes flags")
            new[owner[action.dest]].append(_describe_action(action, group[id(action)]))
        described.update(new)
    return {"transformers": installed_transformers(), "commands": commands, "dataclasses": described}


def render(options: dict) -> str:
    """The options file's text."""
    return json.dumps(options, indent=1, ensure_ascii=False) + "\n"


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _describe_action(action: argparse.Action, group: str) -> dict:
    described = {
        "flags": list(action.option_strings),
        "dest": action.dest,
        "type": _type_name(action),
        "default": _as_data(action.default),
        "choices": None if action.choices is None else [_as_data(choice, str(choice)) for choice in action.choices],
        "required": action.required,
        "help": action.help,
        "group": group,
    }
    if not isinstance(action, argparse._StoreAction):
        described["action"] = {
            argparse._StoreTrueAction: "store_true",
            argparse._StoreFalseAction: "store_false",
            argparse._StoreConstAction: "store_const",
            argparse._AppendAction: "append",
        }[type(action)]
    if action.nargs is not None and not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        described["nargs"] = action.nargs
    if action.const is not None and not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        described["const"] = _as_data(action.const)
    if action.metavar is not None:
        described["metavar"] = action.metavar
    return described


def _type_name(action: argparse.Action) -> str | None:
    """What a value of the option is: `bool`, `int`, `float`, `str`, or the name of the field's own type."""
    from transformers.hf_argparser import string_to_bool

    if action.type is string_to_bool or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "bool"
    if action.choices:  # HfArgumentParser's type for a Literal or an Enum is a lookup function; name the values' type
        kinds = {type(choice).__name__ for choice in action.choices}
        return kinds.pop() if len(kinds) == 1 else "choice"
    return getattr(action.type, "__name__", None)


def _as_data(value, shown: str | None = None):
    """`value` as JSON when JSON gives it back printing as `shown` (by default what argparse's help prints for a
    default: its `__name__` if it has one, else `str(value)`), else that text."""
    if shown is None:
        shown = value.__name__ if hasattr(value, "__name__") else str(value)
    try:
        kept = json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return shown
    return kept if str(kept) == shown else shown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hf_distill.cli_options",
        description=f"Print the options of the hf-distill commands as the dataclasses give them (the text of "
        f"hf_distill/{OPTIONS_FILE}).",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"write them to hf_distill/{OPTIONS_FILE}")
    action.add_argument(
        "--check", action="store_true", help=f"exit with 1 when hf_distill/{OPTIONS_FILE} does not hold them"
    )
    args = parser.parse_args(argv)
    text = render(describe_commands())
    path = Path(__file__).with_name(OPTIONS_FILE)
    if args.write:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    elif args.check:
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            print(f"{path} does not match the options' dataclasses; regenerate it: {REGENERATE}", file=sys.stderr)
            raise SystemExit(1)
        print(f"{path} matches the options' dataclasses")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
