"""The language-model benchmark script's own bookkeeping (benchmarks/lm_gap.py): the gap closed per seed against
each seed's paired no-teacher student, and the adapted teacher reused only with the settings it was made with. The
runs themselves need the SmolLM2 teacher and minutes of CPU: they live in the script and its results file, not here."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import lm_gap  # noqa: E402  (benchmarks/lm_gap.py: the benchmark lives outside the library)

SETUP = {
    "data": {"train_examples": 6000, "held_out_examples": 1000},
    "teacher": {"source": "SmolLM2-135M-Instruct.Q4_1.gguf", "folder": "unused"},
}


def test_the_gap_closed_is_measured_against_each_seeds_own_no_teacher_student():
    record = {
        "teacher_perplexity": 100.0,
        "comparison": {
            "per_seed": [
                {"seed": 0, "distilled": 150.0, "baseline": 200.0},  # half of 200 -> 100
                {"seed": 1, "distilled": 190.0, "baseline": 190.0},  # none of it
                {"seed": 2, "distilled": 130.0, "baseline": 160.0},  # half of 160 -> 100
            ]
        },
    }
    assert lm_gap.gaps_closed(record) == {
        "per_seed": {"0": 0.5, "1": 0.0, "2": 0.5},
        "mean": pytest.approx(1 / 3),
    }
    # A no-teacher student already better than the teacher: there is no gap to close, and no mean over the seeds.
    record["comparison"]["per_seed"][1]["baseline"] = 90.0
    assert lm_gap.gaps_closed(record)["per_seed"]["1"] is None
    assert lm_gap.gaps_closed(record)["mean"] is None


def test_an_adapted_teacher_is_reused_only_with_its_own_settings(tmp_path):
    args = lm_gap.parse_args(["--output_dir", str(tmp_path), "--adapt_teacher_steps", "20"])
    folder = tmp_path / lm_gap.ADAPTED
    folder.mkdir()
    facts = {"folder": str(folder), "settings": lm_gap.adapt_settings(args, SETUP)}
    (folder / "adaptation.json").write_text(json.dumps(facts))
    never_run = ["false"]  # a subprocess would fail: the stored teacher must be reused, not made again
    assert lm_gap.ensure_adapted_teacher(args, SETUP, never_run) == {**facts, "reused": True}

    other = lm_gap.parse_args(["--output_dir", str(tmp_path), "--adapt_teacher_steps", "30"])
    with pytest.raises(SystemExit, match="holds a teacher adapted with .* remove that folder"):
        lm_gap.ensure_adapted_teacher(other, SETUP, never_run)
    unadapted = lm_gap.parse_args(["--output_dir", str(tmp_path), "--adapt_teacher_steps", "0"])
    assert lm_gap.ensure_adapted_teacher(unadapted, SETUP, never_run) is None
    assert lm_gap.teacher_folder({**SETUP, "adapted_teacher": facts}) == str(folder)
    assert lm_gap.teacher_folder({**SETUP, "adapted_teacher": None}) == "unused"
