"""Results come from data: every figure in a results region of README.md and docs/ is what benchmarks/render.py makes
of its results file under benchmarks/results/, and every results file says where its figures come from."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import render  # noqa: E402  (benchmarks/render.py: the renderer lives beside the benchmarks)

# What every results file holds; `command` too, except in a file written before write_results recorded it (the page
# then shows no "Reproduce" line).
RECORD_KEYS = {"benchmark", "date", "commit", "machine", "settings", "figures", "notes"}


def test_the_pages_show_what_their_results_files_hold():
    stale = render.stale_regions()
    assert not stale, f"run `python benchmarks/render.py` (make results): {stale}"


def copy_pages(root: Path) -> Path:
    shutil.copy(REPO / "README.md", root / "README.md")
    shutil.copytree(REPO / "docs", root / "docs")
    return root


def test_a_figure_that_differs_from_its_results_file_is_caught(tmp_path):
    root = copy_pages(tmp_path)
    page = root / "docs" / "compress.md"
    text = page.read_text()
    figure = "| int8 (PyTorch) | 77.30% |"  # the 2-epoch run's int8 export (benchmarks/results/compress.json)
    assert text.count(figure) == 1
    page.write_text(text.replace(figure, "| int8 (PyTorch) | 77.35% |"))
    assert render.stale_regions(root) == ["docs/compress.md:compress"]
    render.render_all(root)  # rendering puts the file's figure back
    assert page.read_text() == text and render.stale_regions(root) == []


def test_a_region_that_is_not_closed_or_names_no_view_is_an_error():
    with pytest.raises(ValueError, match="region 'lm_gap' has no closing <!-- /results:lm_gap --> line"):
        render.render_text("<!-- results:lm_gap -->\n| a table |\n", "page.md")
    with pytest.raises(ValueError, match="unknown results view 'lm-gap'"):
        render.render_text("<!-- results:lm-gap -->\n<!-- /results:lm-gap -->\n", "page.md")
    # A marker quoted inside a sentence is not a region.
    assert render.render_text("Write `<!-- results:NAME -->` lines.\n") == "Write `<!-- results:NAME -->` lines.\n"


def results_files() -> list[Path]:
    return sorted(render.RESULTS.rglob("*.json"))


@pytest.mark.parametrize("path", results_files(), ids=lambda p: str(p.relative_to(render.RESULTS)))
def test_every_results_file_says_where_its_figures_come_from(path):
    record = json.loads(path.read_text())
    assert RECORD_KEYS <= set(record), f"{path.name} lacks {RECORD_KEYS - set(record)}"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", record["date"])
    assert re.fullmatch(r"[0-9a-f]{7,40}(\+changes)?|unknown", record["commit"])
    assert record["machine"] and isinstance(record["notes"], list) and record["figures"]


def test_every_results_file_is_shown_and_every_view_is_on_a_page():
    read = {file for view in render.VIEWS.values() for file in view.files}
    stored = {p.relative_to(render.RESULTS).with_suffix("").as_posix() for p in results_files()}
    assert stored <= read, f"results files no view shows: {sorted(stored - read)}"
    regions = {m["name"] for page in render.pages() for m in render.REGION.finditer(page.read_text())}
    assert set(render.VIEWS) == regions, f"views on no page: {set(render.VIEWS) - regions}"


# ---- the two results files still to come: the demo's and the gain study's ----------------------------------------


def gain_study_row(label, budget, distilled, baseline, p):
    """A row as benchmarks/gain_study.py's `compare` writes it."""
    return {
        "cell": label,
        "group": "budget",
        "label": label,
        "budget_epochs": budget,
        "steps": budget * 188,
        "seeds": [0, 1, 2],
        "distilled_mean": distilled,
        "baseline_mean": baseline,
        "difference_mean": distilled - baseline,
        "difference_std": 0.002,
        "pooled": {"only_distilled_right": 120, "only_baseline_right": 80, "p_value": p},
        "teacher_accuracy": 0.776,
        "share_of_teacher": distilled / 0.776,
        "distilled_train_runtime_s": 300.0,
        "baseline_train_runtime_s": 150.0,
        "train_examples": 30000,
        "per_seed": [],
    }


def write_record(folder: Path, name: str, figures: dict) -> None:
    record = {
        "benchmark": name,
        "date": "2026-12-07",
        "commit": "abc1234",
        "machine": {"cpu_count": 2, "processor": "x86_64", "torch_threads": 1, "torch": "2.13.0"},
        "command": f"python benchmarks/{name}.py",
        "settings": {},
        "figures": figures,
        "notes": ["A note."],
    }
    (folder / f"{name}.json").write_text(json.dumps(record))


def test_the_gain_study_is_rendered_from_its_file_once_it_exists(tmp_path):
    assert "`python benchmarks/gain_study.py --output_dir gain-study` writes" in render.render_view(
        "gain_study", tmp_path
    )
    rows = [gain_study_row("KD + hidden, 4 augmented copies", 4, 0.7650, 0.7500, 3.2e-05)]
    rows[0]["against_best_no_teacher"] = {
        "budget_epochs": 2,
        "baseline_mean": 0.7600,
        "difference_mean": 0.0050,
        "pooled": {"only_distilled_right": 90, "only_baseline_right": 80, "p_value": 0.49},
    }
    write_record(tmp_path, "gain_study", {"rows": rows, "no_teacher_accuracy_by_budget": {"4": 0.75, "1": 0.7}})
    text = render.render_view("gain_study", tmp_path)
    assert (
        "| budget | KD + hidden, 4 augmented copies | 4 E | 752 | 3 | 0.7650 | 0.7500 | +1.50 ± 0.20 | 3.2e-05 |"
        in text
    )
    assert "| 98.6% | 300 / 150 |" in text
    assert "The no-teacher student alone, by budget: 1 E 0.7000, 4 E 0.7500. The teacher: 0.7760." in text
    assert (
        "**Settings that beat the no-teacher student by 1 point or more at p < 0.05:** KD + hidden, 4 augmented "
        "copies at 4 E. The largest gain: KD + hidden, 4 augmented copies at 4 E (+1.50 points, p = 3.2e-05) "
        "(settings within a point of each other are not told apart by these seeds). Against the "
        "no-teacher student at its own best budget (2 E, 0.7600) rather than at the same steps, that setting's gain "
        "is +0.50 points (p = 0.490)."
    ) in text
    assert "*Measured 2026-12-07 at commit `abc1234` on 2 CPU cores, no GPU, 1 torch threads, torch 2.13.0." in text
    assert '??? note "About these figures"\n\n    - A note.' in text
    # A file written before write_results recorded the command (as gain_study.py's first runs were): no "Reproduce".
    record = json.loads((tmp_path / "gain_study.json").read_text())
    del record["command"]
    (tmp_path / "gain_study.json").write_text(json.dumps(record))
    assert "*Measured 2026-12-07 at commit `abc1234` on 2 CPU cores, no GPU, 1 torch threads, torch 2.13.0.*" in (
        render.render_view("gain_study", tmp_path)
    )


def test_the_demo_is_rendered_from_its_file_once_it_exists(tmp_path):
    assert render.render_view("readme", tmp_path).startswith("*Not measured yet: `make benchmark` writes")
    models = {
        "teacher": {"num_layers": 6, "accuracy": 0.78, "macro_f1": 0.75, "parameters": 22.7e6, "size_bytes": 90.9e6},
        "distilled": {"num_layers": 3, "accuracy": 0.78, "macro_f1": 0.75, "teacher_agreement": 0.9},
        "no_teacher": {"num_layers": 3, "accuracy": 0.76, "macro_f1": 0.74, "teacher_agreement": 0.88},
        "int8": {"num_layers": 3, "accuracy": 0.7795, "macro_f1": 0.75, "teacher_agreement": 0.9},
    }
    for name, latency in (("teacher", 400.0), ("distilled", 200.0), ("no_teacher", 201.0), ("int8", 120.0)):
        models[name]["latency_ms_per_batch"] = latency
    comparison = {
        "verdict": "distillation helped (+2.00 points, p = 0.001)",
        "pooled": {"only_distilled_right": 90, "only_baseline_right": 50, "p_value": 0.001},
        "budget_text": "Budget (steps: ...): with the teacher 750 optimizer steps; without it 750",
    }
    write_record(tmp_path, "demo", {"models": models, "latency": {"batch_size": 32}, "comparison": comparison})
    text = render.render_view("readme", tmp_path)
    assert "| student, distilled, int8 | 3 | 0.7795 | 0.7500 | 0.900 | – | – | 120.0 |" in text
    assert "keeps 100.0% of the teacher's accuracy and runs 2.00x faster" in text
    assert "distillation helped (+2.00 points, p = 0.001); only the distilled student right on 90" in text
    assert "without it 750." in text and "About these figures" not in text  # the README shows no notes box


def test_write_results_records_date_commit_machine_and_command(tmp_path, monkeypatch):
    import common

    monkeypatch.setattr(sys, "argv", [str(REPO / "benchmarks" / "lm_gap.py"), "--seeds", "3"])
    path = common.write_results("trial", {"seeds": 3}, {"figure": 1.5}, ["a caveat"], folder=str(tmp_path))
    record = json.loads(Path(path).read_text())
    assert RECORD_KEYS | {"command"} <= set(record) and record["benchmark"] == "trial"
    assert record["command"] == "python benchmarks/lm_gap.py --seeds 3"
    assert record["figures"] == {"figure": 1.5} and record["notes"] == ["a caveat"]
    assert record["machine"]["cpu_count"] >= 1 and "torch" in record["machine"]


def test_the_gain_conclusion_says_when_no_setting_wins():
    rows = [
        gain_study_row("KD + hidden, 4 augmented copies", 4, 0.7620, 0.7600, 0.40),
        gain_study_row("KD only (no hidden states)", 4, 0.7720, 0.7600, 0.06),  # +1.2 points, but p >= 0.05
        gain_study_row("no augmented copies", 2, 0.7640, 0.7580, 0.01),  # p < 0.05, but +0.6 points
    ]
    assert render.gain_conclusion(rows) == (
        "**No setting beat the no-teacher student, trained for as many optimizer steps, by 1 point or more at "
        "p < 0.05.** The largest gain: KD only (no hidden states) at 4 E (+1.20 points, p = 0.060) "
        "(settings within a point of each other are not told apart by these seeds)."
    )
