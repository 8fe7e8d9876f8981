"""Renders the results tables of the README and the docs from the results files under `benchmarks/results/`.

    python benchmarks/render.py            # rewrites every marked region that differs from its results file(s)
    python benchmarks/render.py --check    # changes nothing; names each region that differs, exit status 1 if any

A page marks a region with a pair of HTML comments, which Markdown renderers do not show:

    <!-- results:lm_gap -->
    ... generated: never edit by hand ...
    <!-- /results:lm_gap -->

The name after `results:` is a key of [`VIEWS`]: which results file(s) the region shows and how. Every figure in a
region comes from its file; `tests/test_results.py` fails when rendering would change a page, i.e. when a figure in
the README or the docs differs from its JSON. A results file is what `benchmarks/common.py:write_results` writes:
`date`, `commit`, `machine`, `command`, `settings`, `figures`, `notes`. Notes (caveats, run histories) are shown in a
collapsed box under the docs' tables, not as prose.

This module reads JSON and writes Markdown only: it imports neither torch nor the package.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# A marker is a line of its own (a marker quoted inside a sentence is not one).
REGION = re.compile(
    r"^(<!-- results:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)^(<!-- /results:(?P=name) -->)$", re.S | re.M
)
OPENING = re.compile(r"^<!-- results:([\w.-]+) -->$", re.M)
DASH = "–"


def pages(root: Path = REPO) -> list[Path]:
    """The pages that may hold regions: README.md and every Markdown file under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def load(name: str, results: Path = RESULTS) -> dict | None:
    """The results file `<results>/<name>.json`, or None when it does not exist (yet)."""
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


# ---- formatting ---------------------------------------------------------------------------------------------------


def fixed(value, digits: int = 4) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def percent(value, digits: int = 2) -> str:
    return DASH if value is None else f"{value * 100:.{digits}f}%"


def points(value, digits: int = 2) -> str:
    """A difference of two accuracies (fractions), in points."""
    return DASH if value is None else f"{value * 100:+.{digits}f}"


def millions(value) -> str:
    return DASH if value is None else f"{value / 1e6:.1f}M"


def megabytes(value) -> str:
    return DASH if value is None else f"{value / 1e6:,.1f} MB"


def mebibytes(value, digits: int = 0) -> str:
    return DASH if value is None else f"{value:,.{digits}f} MiB"


def gigabytes_of_mib(value) -> str:
    return DASH if value is None else f"{value / 1024:.1f} GB"


def p_value(value) -> str:
    if value is None:
        return DASH
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def seconds(value, digits: int = 1) -> str:
    return DASH if value is None else f"{value:,.{digits}f} s"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_text(machine: dict) -> str:
    if "description" in machine:
        return machine["description"]
    parts = [f"{machine.get('cpu_count')} CPU cores", machine.get("gpu") or "no GPU"]
    if "torch_threads" in machine:
        parts.append(f"{machine['torch_threads']} torch threads")
    if "torch" in machine:
        parts.append(f"torch {machine['torch']}")
    return ", ".join(parts)


def provenance(record: dict) -> str:
    """Where the figures come from: date, commit, machine, and the command that reproduces them."""
    text = f"*Measured {record['date']} at commit `{record['commit']}` on {machine_text(record['machine'])}."
    if record.get("command"):
        text += f" Reproduce: `{record['command']}`."
    return text + "*"


def notes_box(record: dict, title: str = "About these figures") -> str:
    """The notes of a results file, in a collapsed box (Material's `???` admonition)."""
    if not record.get("notes"):
        return ""
    lines = "\n".join(f"    - {note}" for note in record["notes"])
    return f'??? note "{title}"\n\n{lines}'


def sourced(record: dict, body: str, notes: bool = True) -> str:
    """A docs region: the table(s), the provenance line, the notes."""
    parts = [body, provenance(record)]
    if notes and record.get("notes"):
        parts.append(notes_box(record))
    return "\n\n".join(parts)


def not_yet(name: str, command: str) -> str:
    where = f"`benchmarks/results/{name}.json`"
    return f"*Not measured yet: `{command}` writes {where}; `make results` then shows it here.*"


# ---- the views: one function per kind of table --------------------------------------------------------------------

DEMO_ROWS = (
    ("teacher", "teacher"),
    ("distilled", "student, distilled"),
    ("no_teacher", "student, no teacher"),
    ("int8", "student, distilled, int8"),
)


def demo_table(figures: dict) -> str:
    models, latency = figures["models"], figures.get("latency", {})
    header = ["model", "layers", "accuracy", "macro-F1", "agreement with teacher", "parameters", "size"]
    header.append(f"CPU ms / batch of {latency.get('batch_size', 32)}")
    rows = []
    for key, label in DEMO_ROWS:
        if key not in models:
            continue
        facts = models[key]
        rows.append(
            [
                label,
                facts.get("num_layers", DASH),
                fixed(facts.get("accuracy")),
                fixed(facts.get("macro_f1")),
                fixed(facts.get("teacher_agreement"), 3),
                millions(facts.get("parameters")),
                megabytes(facts.get("size_bytes")),
                fixed(facts.get("latency_ms_per_batch"), 1),
            ]
        )
    return table(header, rows)


def demo_summary(figures: dict) -> str:
    models = figures["models"]
    teacher, student = models["teacher"], models["distilled"]
    lines = [
        f"The distilled student keeps {student['accuracy'] / teacher['accuracy']:.1%} of the teacher's accuracy"
        + (
            f" and runs {teacher['latency_ms_per_batch'] / student['latency_ms_per_batch']:.2f}x faster."
            if "latency_ms_per_batch" in student and "latency_ms_per_batch" in teacher
            else "."
        )
    ]
    comparison = figures.get("comparison")
    if comparison:
        pooled = comparison["pooled"]
        difference = student["accuracy"] - models["no_teacher"]["accuracy"]
        verdict = comparison.get("verdict") or f"{points(difference)} points, McNemar p = {p_value(pooled['p_value'])}"
        line = (
            f"Against the same student trained without the teacher: {verdict}; only the distilled student right on "
            f"{pooled['only_distilled_right']} test tweets, only the other on {pooled['only_baseline_right']}."
        )
        if "budget_text" in comparison:
            line += f" {comparison['budget_text']}."
        lines.append(line)
    return "\n".join(f"- {line}" for line in lines)


def collapsed(title: str, markdown: str, kind: str = "info") -> str:
    """`markdown` in a collapsed box (Material's `???` admonition): its lines indented under the title."""
    body = "\n".join("    " + line if line else "" for line in markdown.splitlines())
    return f'??? {kind} "{title}"\n\n{body}'


def view_readme(records: list[dict | None]) -> str:
    (record,) = records
    if record is None:
        return not_yet("demo", "make benchmark")
    body = demo_table(record["figures"]) + "\n\n" + demo_summary(record["figures"])
    return body + "\n\n" + provenance(record)


def view_demo(records: list[dict | None]) -> str:
    (record,) = records
    if record is None:
        return not_yet("demo", "make benchmark")
    figures = record["figures"]
    body = demo_table(figures) + "\n\n" + demo_summary(figures)
    if "cost" in figures:
        cost = figures["cost"]
        body += (
            f"\n- One distillation epoch costs {cost['distillation_cost_ratio']:.2f} x (one student epoch + one "
            f"teacher inference pass over the same data): {seconds(cost['distillation_epoch_s'])} against "
            f"{seconds(cost['student_epoch_s'])} + {seconds(cost['teacher_inference_pass_s'])}."
        )
    if "peak_rss_mb" in figures:
        peaks = ", ".join(f"{phase} {mebibytes(mb)}" for phase, mb in figures["peak_rss_mb"].items() if mb)
        body += f"\n- Peak resident memory of each phase: {peaks}."
    return sourced(record, body)


UNTOLD = " (settings within a point of each other are not told apart by these seeds)"


def view_gain_study(records: list[dict | None]) -> str:
    (record,) = records
    if record is None:
        return not_yet("gain_study", "python benchmarks/gain_study.py --output_dir gain-study")
    figures = record["figures"]
    header = ["group", "setting", "budget", "steps", "seeds", "distilled", "no teacher", "gain (points)"]
    header += ["p (pooled)", "share of teacher", "train s (distilled / no teacher)"]
    rows = [
        [
            row["group"],
            row["label"],
            f"{row['budget_epochs']} E",
            f"{row['steps']:,}",
            len(row["seeds"]),
            fixed(row["distilled_mean"]),
            fixed(row["baseline_mean"]),
            f"{points(row['difference_mean'])} ± {row['difference_std'] * 100:.2f}",
            p_value(row["pooled"]["p_value"]),
            percent(row["share_of_teacher"], 1),
            f"{row['distilled_train_runtime_s']:,.0f} / {row['baseline_train_runtime_s']:,.0f}",
        ]
        for row in figures["rows"]
    ]
    body = table(header, rows)
    by_budget = figures.get("no_teacher_accuracy_by_budget") or {}
    if by_budget:
        ordered = sorted(by_budget.items(), key=lambda item: float(item[0]))
        body += "\n\nThe no-teacher student alone, by budget: " + ", ".join(f"{b} E {fixed(a)}" for b, a in ordered)
        body += "."
    teachers = {round(row["teacher_accuracy"], 4) for row in figures["rows"]}
    if len(teachers) == 1:
        body += f" The teacher: {fixed(teachers.pop())}."
    body += "\n\n" + gain_conclusion(figures["rows"])
    best = max(figures["rows"], key=lambda r: r["difference_mean"], default=None)
    versus = (best or {}).get("against_best_no_teacher")
    if versus:
        body += (
            f" Against the no-teacher student at its own best budget ({versus['budget_epochs']} E, "
            f"{fixed(versus['baseline_mean'])}) rather than at the same steps, that setting's gain is "
            f"{points(versus['difference_mean'])} points (p = {p_value(versus['pooled']['p_value'])})."
        )
    body += (
        "\n\nE: one epoch's worth of optimizer steps over the labelled tweets; ± the standard deviation over seeds."
    )
    return sourced(record, body)


def gain_conclusion(rows: list[dict], points_needed: float = 1.0, alpha: float = 0.05) -> str:
    """What the table says, in one sentence: the settings that beat the no-teacher student trained for as many steps
    by `points_needed` or more with a pooled p below `alpha`, or that none did, and the best one."""
    if not rows:
        return "No setting has finished runs yet."
    winners = [r for r in rows if r["difference_mean"] * 100 >= points_needed and r["pooled"]["p_value"] < alpha]
    best = max(rows, key=lambda r: r["difference_mean"])
    named = f"{best['label']} at {best['budget_epochs']} E ({points(best['difference_mean'])} points, p = "
    named += f"{p_value(best['pooled']['p_value'])})"
    if winners:
        listed = "; ".join(f"{r['label']} at {r['budget_epochs']} E" for r in winners)
        return (
            f"**Settings that beat the no-teacher student by {points_needed:g} point or more at p < {alpha:g}:** "
            f"{listed}. The largest gain: {named}{UNTOLD}."
        )
    return (
        f"**No setting beat the no-teacher student, trained for as many optimizer steps, by {points_needed:g} point "
        f"or more at p < {alpha:g}.** The largest gain: {named}{UNTOLD}."
    )


def view_teacher_sweep(records: list[dict | None]) -> str:
    (record,) = records
    rows = [
        [
            f"{teacher['epochs']:g}",
            f"{teacher['learning_rate']:g}",
            fixed(teacher["validation_accuracy"]),
            fixed(teacher["study_accuracy"]),
            seconds(teacher.get("train_runtime_s"), 0),
        ]
        for teacher in record["figures"]["teachers"]
    ]
    header = ["teacher epochs", "learning rate", "validation accuracy", "study-split accuracy", "fine-tuning time"]
    return sourced(record, table(header, rows))


def view_gain_equal_epochs(records: list[dict | None]) -> str:
    (record,) = records
    figures = record["figures"]
    header = ["demo run", "teacher", "distilled", "no teacher", "gain (points)"]
    header += ["only distilled / only no teacher right", "p"]
    runs = table(
        header,
        [
            [
                run["run"],
                fixed(run.get("teacher_accuracy")),
                fixed(run.get("distilled_accuracy")),
                fixed(run.get("no_teacher_accuracy")),
                points(run["difference"]),
                f"{run['only_distilled_right']} / {run['only_no_teacher_right']}"
                if "only_distilled_right" in run
                else DASH,
                p_value(run["p_value"]),
            ]
            for run in figures["demo_runs"]
        ],
    )
    augmented = figures["augmented_transfer_set"]
    seeds = table(
        ["seed", "distilled, labelled + augmented copies", "no teacher, labelled", "gain (points)", "p"],
        [
            [
                row["seed"],
                fixed(row["distilled"]),
                fixed(row["baseline"]),
                points(row["difference"]),
                p_value(row["p"]),
            ]
            for row in augmented["per_seed"]
        ],
    )
    pooled = augmented["pooled"]
    body = (
        f"{runs}\n\nWithout the transfer set (labelled tweets only), three runs gave "
        + ", ".join(points(value) for value in figures["no_transfer_set_differences"])
        + f" points.\n\n{seeds}\n\nPooled over the seeds: only the distilled student right on "
        f"{pooled['only_distilled_right']} test tweets, only the no-teacher student on "
        f"{pooled['only_no_teacher_right']} (McNemar p = {p_value(pooled['p_value'])}); optimizer steps "
        f"{augmented['steps']['distilled']} against {augmented['steps']['no_teacher']}."
    )
    title = "Earlier runs, under the equal-epoch rule (the no-teacher student trained fewer optimizer steps)"
    return collapsed(title, sourced(record, body))


def view_demo_equal_epochs(records: list[dict | None]) -> str:
    title = "An earlier run of the demo, under the equal-epoch rule (the no-teacher student trained fewer steps)"
    return collapsed(title, view_demo(records))


def view_variants_cache(records: list[dict | None]) -> str:
    (record,) = records
    figures = record["figures"]["variants"]
    speed, cache, top1 = figures["speed"], figures["cache"], figures["top1"]
    reference = record["figures"]["reference"]["student"]["accuracy"]
    rows = [
        [
            "a distillation step from the cache / a plain student fine-tuning step, the same "
            f"{speed['steps']} batches",
            f"**{speed['ratio']:.3f}** ({seconds(speed['cached_s'])} / {seconds(speed['plain_s'])}, medians of 3 "
            "turns each, in a balanced order)",
        ],
        [
            "student distilled from the cache (all logits, float32 hidden states) against the live-teacher student",
            f"test accuracy {fixed(cache['accuracy'])} against {fixed(reference)}; largest weight difference "
            f"{cache['max_weight_diff_vs_live_teacher']:.1e}",
        ],
        [
            "student from a top-1 cache (3 classes: a top-2 cache holds the whole distribution)",
            f"test accuracy {fixed(top1['accuracy'])} ({points(top1['accuracy'] - reference)} points)",
        ],
        ["building the cache (one teacher pass over the training tweets)", seconds(cache["cache_build_s"], 0)],
        [
            "cache size: logits only / with the hidden states of 3 layers in float16 / in float32",
            f"{mebibytes(cache['cache_mb_logits_only'], 2)} / {mebibytes(cache['cache_mb_hidden_float16'])} / "
            f"{mebibytes(cache['cache_mb'])}",
        ],
    ]
    return sourced(record, table(["", "result"], rows))


VARIANT_LABELS = {
    "similarity": "+ similarity loss (weight 1.0)",
    "relation": "+ MiniLM Q/K/V relations of the last layers (weight 1.0)",
    "ensemble": "two teachers, 0.5 / 0.5",
    "lora": "LoRA student (r = 8 on query and value, plus the classifier)",
}


def view_variants_methods(records: list[dict | None]) -> str:
    (record,) = records
    variants, reference = record["figures"]["variants"], record["figures"]["reference"]
    ref = reference["student"]
    rows = [
        [
            "reference: KD + labels + cosine hidden states",
            fixed(ref["accuracy"]),
            fixed(ref["macro_f1"]),
            fixed(ref["teacher_agreement"]),
            DASH,
        ]
    ]
    for name, label in VARIANT_LABELS.items():
        if name not in variants:
            continue
        facts = variants[name]
        if name == "ensemble" and "second_teacher_accuracy" in facts:
            label += f" (the second teacher: {fixed(facts['second_teacher_accuracy'])})"
        if name == "lora" and "trainable_parameters" in facts:
            label += f": {facts['trainable_parameters'] / 1e3:.0f}k of {millions(facts['all_parameters'])} train"
        rows.append(
            [
                label,
                fixed(facts["accuracy"]),
                fixed(facts["macro_f1"]),
                fixed(facts["teacher_agreement"]),
                points(facts["accuracy"] - ref["accuracy"]),
            ]
        )
    header = ["variant", "test accuracy", "macro-F1", "agreement with teacher", "vs reference (points)"]
    body = table(header, rows)
    body += (
        f"\n\nTeacher {fixed(reference['teacher']['accuracy'])}; the same student without the teacher "
        f"{fixed(reference['baseline']['accuracy'])}."
    )
    return sourced(record, body)


def view_mlm_topk(records: list[dict | None]) -> str:
    (record,) = records
    figures = record["figures"]
    live = figures["live"]
    rows = [
        [
            "live teacher",
            fixed(live["masked_token_accuracy"]),
            fixed(live["teacher_agreement"], 3),
            f"{DASH} (all logits would take {mebibytes(figures['full_logits_mb_estimate'])})",
        ]
    ]
    tops = sorted((int(name[3:]), facts) for name, facts in figures.items() if re.fullmatch(r"top\d+", name))
    for k, facts in sorted(tops, key=lambda item: -item[0]):
        accuracy = facts["masked_token_accuracy"]
        rows.append(
            [
                f"top-{k} cache",
                f"{fixed(accuracy)} ({points(accuracy - live['masked_token_accuracy'])} points)",
                fixed(facts["teacher_agreement"], 3),
                mebibytes(facts["cache_mb"], 1),
            ]
        )
    teacher = figures["teacher"]
    body = table(["teacher outputs", "student masked-token accuracy", "agreement with teacher", "cache on disk"], rows)
    body += (
        f"\n\nThe teacher's masked-token accuracy: {fixed(teacher['masked_token_accuracy'])}, on "
        f"{teacher['masked_tokens']:,} masked test tokens."
    )
    return sourced(record, body)


def view_compress(records: list[dict | None]) -> str:
    (record,) = records
    figures, settings = record["figures"], record["settings"]
    models = figures["models"]
    teacher_32 = models["teacher"]["latency_ms"]["32"]
    shape = f"{len(settings['layers'].split(','))} layers, FFN {settings['intermediate_size']:,}"
    labels = {
        "teacher": f"teacher ({models['teacher'].get('num_layers', 6)} layers)",
        "student": f"pruned + distilled ({shape})",
        figures["compared_with"]: "same shape, no teacher",
        "int8": "int8 (PyTorch)",
        "onnx": "ONNX float",
        "onnx-int8": "ONNX int8",
    }
    rows = []
    for name, label in labels.items():
        if name not in models:
            continue
        facts = models[name]
        latency = facts.get("latency_ms", {})
        rows.append(
            [
                label,
                percent(facts.get("accuracy")),
                percent(facts.get("student_agreement")),
                percent(facts.get("teacher_agreement")),
                millions(facts.get("parameters")),
                megabytes(facts.get("size_bytes")),
                fixed(latency.get("1"), 1),
                fixed(latency.get("32"), 1),
                f"{teacher_32 / latency['32']:.2f}×" if "32" in latency else DASH,
            ]
        )
    header = ["model", "accuracy", "agreement with student", "agreement with teacher", "parameters", "size"]
    header += ["ms, batch 1", "ms, batch 32", "speed-up (32)"]
    body = table(header, rows)
    paired = figures["paired"]
    difference = models["student"]["accuracy"] - models[figures["compared_with"]]["accuracy"]
    body += (
        f"\n\nPruned + distilled against the same shape without the teacher: {points(difference)} points; only the "
        f"distilled student right on "
        f"{paired['only_distilled_right']} test tweets, only the other on {paired['only_no_teacher_right']} "
        f"(McNemar p = {p_value(paired['mcnemar_p'])}). Both trained {settings['epochs']:g} "
        f"epoch{'' if settings['epochs'] == 1 else 's'}."
    )
    return sourced(record, body)


def run_label(record: dict, settings: dict) -> str:
    name = record["run"]
    labels = {"no-teacher": "no teacher: the LM loss alone"}
    if name in labels:
        return labels[name]
    divergence = name.removeprefix("on-policy-")
    text = {"forward_kl": "forward KL", "reverse_kl": "reverse KL", "jsd": "JSD"}.get(divergence, divergence)
    text += f" + {settings['label_weight']:g} LM"
    return ("on-policy " + text) if name.startswith("on-policy-") else text


def spread(values: list[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    return f"{mean:.{digits}f} ± {sd:.{digits}f} (" + ", ".join(f"{v:.{digits}f}" for v in values) + ")"


def view_lm_gap(records: list[dict | None]) -> str:
    (record,) = records
    figures, settings = record["figures"], record["settings"]
    adaptation = figures.get("teacher_adaptation")
    rows = []
    teacher_ppl = None
    for run in figures["runs"]:
        teacher_ppl = run["teacher_perplexity"]
        comparison = run.get("comparison")
        if comparison:
            per_seed = comparison["per_seed"]
            gaps = run["gap_closed"]
            closed = percent(gaps["mean"], 1)
            if len(per_seed) > 1:
                closed += " (" + ", ".join(percent(v, 1) for v in gaps["per_seed"].values()) + ")"
            agreement = comparison["mean"].get("distilled_teacher_agreement")
            baseline_agreement = comparison["mean"].get("baseline_teacher_agreement")
            rows.append(
                [
                    run_label(run, settings),
                    ", ".join(str(row["seed"]) for row in per_seed),
                    spread([row["distilled"] for row in per_seed]),
                    spread([row["baseline"] for row in per_seed]),
                    closed,
                    p_value(comparison["pooled"]["p_value"]),
                    f"{fixed(agreement, 3)} ({fixed(baseline_agreement, 3)})",
                    fixed(run.get("seconds_per_step"), 2),
                    gigabytes_of_mib(run.get("peak_rss_mib")),
                ]
            )
        else:
            rows.append(
                [
                    run_label(run, settings),
                    str(run.get("seed", 0)),
                    f"{run['perplexity']:.1f}",
                    "",
                    "",
                    "",
                    fixed(run.get("teacher_agreement"), 3),
                    fixed(run.get("seconds_per_step"), 2),
                    gigabytes_of_mib(run.get("peak_rss_mib")),
                ]
            )
    header = ["run", "seeds", "held-out perplexity", "its no-teacher student (paired)", "gap closed", "p"]
    header += ["top-1 agreement with the teacher (no-teacher's)", "s / step", "peak RSS"]
    teacher_row = ["teacher, adapted to the tweets" if adaptation else "teacher", "", f"{teacher_ppl:.1f}"]
    rows.insert(0, teacher_row + [""] * (len(header) - 3))
    body = table(header, rows)
    if adaptation:
        body = (
            f"The teacher adapted to the tweets first ({adaptation['settings']['steps']} steps): held-out perplexity "
            f"{adaptation['perplexity_before']:.1f} before, {adaptation['perplexity_after']:.1f} after; top-1 "
            f"next-token accuracy {fixed(adaptation['accuracy_before'], 3)} before, "
            f"{fixed(adaptation['accuracy_after'], 3)} after ({seconds(adaptation['train_runtime_s'], 0)}, "
            f"{fixed(adaptation['seconds_per_step'], 2)} s a step, peak RSS "
            f"{gigabytes_of_mib(adaptation['peak_rss_mib'])}).\n\n" + body
        )
    body += (
        "\n\nGap closed = (perplexity of the no-teacher student − of the distilled one) / (of the no-teacher student "
        "− of the teacher), per seed against that seed's own no-teacher student; ± the standard deviation over "
        "seeds; p: paired bootstrap of the perplexity difference, pooled over seeds."
    )
    return sourced(record, body)


def view_lm_vocab_caches(records: list[dict | None]) -> str:
    (record,) = records
    figures = record["figures"]
    rows = [
        [
            f"{name} ({facts['tokens']:,} tokens)",
            seconds(facts["build_seconds"]),
            f"{facts['bytes_per_token']:,.0f} bytes",
        ]
        for name, facts in figures["caches"].items()
    ]
    rows.append(["all logits (not built)", "", f"{figures['all_logits_bytes_per_token']:,} bytes"])
    return sourced(record, table(["cache", "build (one teacher pass)", "on disk per token"], rows))


def view_lm_vocab_bias(records: list[dict | None]) -> str:
    (record,) = records
    bias = record["figures"]["bias"]
    rows = []
    for name, row in bias["rows"].items():
        mean = f"{row['error_of_mean']:.3f}" if "error_of_mean" in row else "(the same every time)"
        distinct = f"{row['distinct_tokens']:.1f} of {name.split()[0]}" if "distinct_tokens" in row else ""
        rows.append([name, f"{row['error']:.3f}", mean, distinct])
    rounds = next((row["rounds"] for row in bias["rows"].values() if "rounds" in row), None)
    header = ["cache", "relative error of the gradient, ‖g − (q − p)‖ / ‖q − p‖"]
    header += [f"the mean of {rounds} independent draws" if rounds else "the mean of independent draws"]
    header += ["distinct tokens drawn per position"]
    body = table(header, rows)
    body += (
        f"\n\nOn {bias['positions']:,} positions of the tweets; the student: {bias['student_layers']} layers built "
        "from the teacher, untrained."
    )
    return sourced(record, body)


def view_lm_vocab_steps(records: list[dict | None]) -> str:
    (record,) = records
    steps = record["figures"]["steps"]
    plain = steps["plain LM step"]
    labels = {
        "plain LM step": "plain student LM step (`Trainer`, LM loss)",
    }
    rows = []
    for name, facts in steps.items():
        label = labels.get(name, name.replace("distillation from", "distillation (0.5 KD + 0.5 LM) from"))
        rows.append(
            [
                label,
                f"{facts['seconds_per_step']:.2f}",
                f"{facts['seconds_per_step'] / plain['seconds_per_step']:.2f}",
                mebibytes(facts["peak_mib"]),
                f"{facts['peak_mib'] / plain['peak_mib']:.2f}",
            ]
        )
    return sourced(record, table(["step", "seconds", "x plain", "peak", "x plain"], rows))


LOSS_KEY = re.compile(r"length (?P<length>\d+), (?P<teacher>\w+) teacher, (?P<what>.+)")


def view_lm_vocab_loss(records: list[dict | None]) -> str:
    (record,) = records
    loss = record["figures"]["loss"]
    cells: dict[tuple[int, str], dict[str, dict]] = {}
    for key, facts in loss.items():
        match = LOSS_KEY.fullmatch(key)
        cells.setdefault((int(match["length"]), match["teacher"]), {})[match["what"]] = facts

    def cell(facts: dict | None) -> str:
        return DASH if facts is None else f"{facts['seconds']:.2f} s, {mebibytes(facts['peak_mib'])}"

    teacher_text = {"topk": "top-32 targets", "dense": "dense logits"}
    chunked, combined = [], []
    for (length, teacher), kinds in sorted(cells.items()):
        if "chunk None" in kinds or any(k.startswith("chunk ") for k in kinds):
            chunk = next((k for k in kinds if k.startswith("chunk ") and k != "chunk None"), None)
            chunked.append(
                [f"{length:,}", teacher_text[teacher], cell(kinds.get("chunk None")), cell(kinds.get(chunk))]
            )
        if any(k.startswith("0.5 KD") for k in kinds):
            combined.append(
                [
                    f"{length:,}",
                    teacher_text[teacher],
                    cell(kinds.get("0.5 KD + 0.5 LM loss, apart")),
                    cell(kinds.get("0.5 KD + 0.5 LM loss, one pass")),
                ]
            )
    parts = []
    if chunked:
        parts.append(table(["L", "teacher", "one piece: s, peak", "chunks of 128: s, peak"], chunked))
    if combined:
        parts.append(
            "With the LM loss too (0.5 KD + 0.5 LM, forward KL, T = 1):\n\n"
            + table(["L", "teacher", "the two terms apart: s, peak", "one pass: s, peak"], combined)
        )
    return sourced(record, "\n\n".join(parts))


def view_fused_linear_loss(records: list[dict | None]) -> str:
    (record,) = records
    if record is None:
        return not_yet("fused_linear_loss", "python benchmarks/fused_linear_loss.py")
    rows = [
        [
            f"{row['vocabulary']:,}",
            f"{row['length']:,}",
            {"top-k": "top-k cache", "head": "live teacher"}.get(row["teacher"], row["teacher"]),
            f"{seconds(row['one pass']['seconds'], 2)}, {mebibytes(row['one pass']['peak_mib'])}",
            f"{seconds(row['fused']['seconds'], 2)}, {mebibytes(row['fused']['peak_mib'])}",
            f"{row['peak_ratio']:.2f}x",
            f"{row['time_ratio']:.2f}x",
        ]
        for row in record["figures"]["rows"]
    ]
    header = ["vocabulary", "tokens", "teacher", "one pass: s, peak", "fused: s, peak", "peak ratio", "time ratio"]
    return sourced(record, table(header, rows))


def view_latency_repeat(records: list[dict | None]) -> str:
    (record,) = records
    summary = record["figures"]["summary"]
    described = {
        "rounds": "interleaved rounds (what hf-distill measures)",
        "fixed order": "the same order every round, 2 warm-up rounds (for comparison)",
    }
    rows = []
    for method, by_batch in summary.items():
        for batch, facts in by_batch.items():
            moved = facts["speedup student vs teacher"]
            control = facts["speedup student copy vs student"]
            rows.append(
                [
                    described.get(method, method),
                    batch,
                    ", ".join(f"{value:.2f}x" for value in moved["per_run"]),
                    f"{moved['max_over_min']:.2f}",
                    ", ".join(f"{value:.2f}x" for value in control["per_run"]),
                ]
            )
    header = ["measurement", "batch", "student speed-up over the teacher, per run", "largest / smallest"]
    header += ["a copy of the student against the student, per run"]
    return sourced(record, table(header, rows))


def view_teacher_engines(records: list[dict | None]) -> str:
    (record,) = records
    if record is None:
        return not_yet("teacher_engines", "python benchmarks/teacher_engines.py --parts cache")
    cache = record["figures"].get("cache") or {}
    rows = []
    for engine, facts in cache.items():
        against = facts.get("against_pytorch") or {}
        rows.append(
            [
                f"`{engine}`",
                f"{facts['examples']:,}",
                seconds(facts["seconds"]),
                f"{facts['tokens_per_s']:,.0f}",
                f"{facts['speedup']:.2f}x" if "speedup" in facts else DASH,
                percent(against["top1_agreement"], 2) if "top1_agreement" in against else DASH,
                # The KL of equal distributions is a sum of rounding errors of either sign: shown as 0.
                f"{max(against['kl_at_T2'], 0.0):.2g}" if "kl_at_T2" in against else DASH,
            ]
        )
    header = ["teacher engine", "examples", "cache build", "tokens / s", "speed-up", "top-1 agreement", "KL at T = 2"]
    body = table(header, rows)
    live = record["figures"].get("live") or {}
    if live:
        epochs = [
            [f"`{engine}`", seconds(facts["epoch_s"]), f"{facts['ratio_to_pytorch']:.2f}x"]
            for engine, facts in live.items()
        ]
        body += "\n\nOne live distillation epoch (no cache), the teacher's passes by each engine:\n\n"
        body += table(["teacher engine", "epoch", "against PyTorch's epoch"], epochs)
    return sourced(record, body)


def view_group_by_length(records: list[dict | None]) -> str:
    (record,) = records
    runs = record["figures"]["runs"]
    rows = [
        [name, seconds(facts["train_runtime_s"], 0), fixed(facts["test_accuracy"])] for name, facts in runs.items()
    ]
    return sourced(record, table(["`train_sampling_strategy`", "training time", "test accuracy"], rows))


def view_index(records: list[dict | None]) -> str:
    """Every results file: what it holds, when and where it was measured."""
    rows = []
    for path in sorted(RESULTS.rglob("*.json")):
        record = json.loads(path.read_text())
        name = path.relative_to(RESULTS).with_suffix("").as_posix()
        shown = sorted(view for view, spec in VIEWS.items() if name in spec.files)
        rows.append(
            [
                f"`{name}.json`",
                record["date"],
                f"`{record['commit']}`",
                f"`{record['command']}`" if record.get("command") else "not recorded",
                ", ".join(f"`{view}`" for view in shown) or DASH,
            ]
        )
    return table(["results file", "measured", "commit", "command", "shown in regions"], rows)


@dataclass(frozen=True)
class View:
    """A kind of region: the results files it reads (names under benchmarks/results/, without `.json`) and the
    function that turns them (None for a file that does not exist yet) into Markdown."""

    files: tuple[str, ...]
    render: Callable[[list[dict | None]], str]
    optional: bool = False  # a file that may not exist yet (the function then says how to make it)


VIEWS: dict[str, View] = {
    "readme": View(("demo",), view_readme, optional=True),
    "demo": View(("demo",), view_demo, optional=True),
    "gain_study": View(("gain_study",), view_gain_study, optional=True),
    "teacher_sweep": View(("teacher_sweep",), view_teacher_sweep),
    "gain_equal_epochs": View(("history/gain_equal_epochs",), view_gain_equal_epochs),
    "demo_equal_epochs": View(("history/demo_equal_epochs",), view_demo_equal_epochs),
    "variants_cache": View(("variants",), view_variants_cache),
    "variants_methods": View(("variants",), view_variants_methods),
    "mlm_topk": View(("mlm_topk",), view_mlm_topk),
    "compress": View(("compress",), view_compress),
    "compress_ffn768_1epoch": View(("compress_ffn768_1epoch",), view_compress),
    "lm_gap": View(("lm_gap",), view_lm_gap),
    "lm_vocab_caches": View(("lm_vocab_caches",), view_lm_vocab_caches),
    "lm_vocab_bias": View(("lm_vocab_bias",), view_lm_vocab_bias),
    "lm_vocab_steps": View(("lm_vocab_steps",), view_lm_vocab_steps),
    "lm_vocab_loss": View(("lm_vocab_loss",), view_lm_vocab_loss),
    "fused_linear_loss": View(("fused_linear_loss",), view_fused_linear_loss, optional=True),
    "latency_repeat": View(("latency_repeat",), view_latency_repeat),
    "teacher_engines": View(("teacher_engines",), view_teacher_engines, optional=True),
    "group_by_length": View(("group_by_length",), view_group_by_length),
    "index": View((), view_index),
}


# ---- regions ------------------------------------------------------------------------------------------------------


def render_view(name: str, results: Path = RESULTS) -> str:
    if name not in VIEWS:
        raise ValueError(f"unknown results view {name!r}: use one of {', '.join(VIEWS)} (benchmarks/render.py)")
    view = VIEWS[name]
    records = [load(file, results) for file in view.files]
    missing = [file for file, record in zip(view.files, records) if record is None]
    if missing and not view.optional:
        raise FileNotFoundError(f"results view {name!r} needs benchmarks/results/{missing[0]}.json, which is missing")
    return view.render(records)


def render_text(text: str, where: str = "page", results: Path = RESULTS) -> str:
    """`text` with each region's body replaced by its rendering."""
    opened = OPENING.findall(text)
    closed = [match["name"] for match in REGION.finditer(text)]
    if sorted(opened) != sorted(closed):
        unclosed = sorted(set(opened) - set(closed)) or opened
        raise ValueError(f"{where}: region {unclosed[0]!r} has no closing <!-- /results:{unclosed[0]} --> line")

    def replace(match: re.Match) -> str:
        body = render_view(match["name"], results)
        return f"{match.group(1)}\n{body}\n\n{match.group(4)}"

    return REGION.sub(replace, text)


def stale_regions(root: Path = REPO, results: Path = RESULTS) -> list[str]:
    """`page:region` for every region whose text differs from its rendering (what `--check` reports)."""
    stale = []
    for page in pages(root):
        if not page.is_file():
            continue
        text = page.read_text()
        rendered = render_text(text, str(page.relative_to(root)), results)
        if rendered != text:
            old = {m["name"]: m["body"] for m in REGION.finditer(text)}
            new = {m["name"]: m["body"] for m in REGION.finditer(rendered)}
            stale += [f"{page.relative_to(root)}:{name}" for name in new if new[name] != old.get(name)]
    return stale


def render_all(root: Path = REPO, results: Path = RESULTS) -> list[Path]:
    """Rewrites every page whose regions differ from their rendering; returns the pages rewritten."""
    written = []
    for page in pages(root):
        if not page.is_file():
            continue
        text = page.read_text()
        rendered = render_text(text, str(page.relative_to(root)), results)
        if rendered != text:
            page.write_text(rendered)
            written.append(page)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Change nothing; exit 1 if a region differs.")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_regions()
        for region in stale:
            print(f"{region}: differs from its results file; run `python benchmarks/render.py`")
        return 1 if stale else 0
    for page in render_all():
        print(f"rendered {page.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
