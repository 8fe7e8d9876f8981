"""`hf-distill COMMAND --help` from `cli_options.json`, the commands' options shipped as data with the package: plain
argparse prints the help of the command's `HfArgumentParser` without importing torch, transformers or datasets to build
that parser. `hf_distill/cli_options.py` writes the file from the dataclasses.
"""

from __future__ import annotations

import argparse
import importlib.resources
import importlib.util
import json
import re

OPTIONS_FILE = "cli_options.json"


def load_options() -> dict | None:
    """The shipped options file, or None when the package has none."""
    path = importlib.resources.files("hf_distill").joinpath(OPTIONS_FILE)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def installed_transformers() -> str | None:
    """The installed transformers' version, read from its `__init__.py` without importing it (importing it is what
    the file saves; `importlib.metadata` alone costs a tenth of a second on a busy machine)."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        return None
    with open(spec.origin, encoding="utf-8") as init:
        found = re.search(r'^__version__ = "([^"]+)"', init.read(), re.MULTILINE)
    return found.group(1) if found else None


def help_parser(command: str) -> argparse.ArgumentParser | None:
    """A plain argparse parser holding the options of `hf-distill COMMAND` as the shipped file describes them: its
    help is the help of the command's `HfArgumentParser`, once given the same usage and description.

    Returns None when the file does not describe the command, or was written with another transformers than the
    installed one (whose `TrainingArguments` may differ): the caller then builds the real parser.
    """
    options = load_options()
    if options is None or command not in options["commands"] or options["transformers"] != installed_transformers():
        return None
    parser = argparse.ArgumentParser(
        prog=f"hf-distill {command}", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    groups = {parser._optionals.title: parser, parser._positionals.title: parser}
    for name in options["commands"][command]:
        for option in options["dataclasses"][name]:
            if option["group"] not in groups:
                groups[option["group"]] = parser.add_argument_group(option["group"])
            keywords = {"dest": option["dest"], "default": option["default"], "help": option["help"]}
            if option["choices"] is not None:
                keywords["choices"] = option["choices"]
            if option["required"]:
                keywords["required"] = True
            # argparse's own mechanics, present only where they are not its defaults.
            keywords.update({key: option[key] for key in ("action", "nargs", "const", "metavar") if key in option})
            if isinstance(keywords.get("metavar"), list):  # argparse's tuple: one name per value
                keywords["metavar"] = tuple(keywords["metavar"])
            groups[option["group"]].add_argument(*option["flags"], **keywords)
    return parser
