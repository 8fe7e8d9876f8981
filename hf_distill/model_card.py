"""A model card (README.md) for a distilled student, from its folder and the run's `distillation_metrics.json`.

Every figure in the card comes from the metrics (the training command measures and writes them) or from the folder's
`config.json`; a figure that is not known is left out, never guessed. Which figures a task shows (accuracy, entity F1,
exact match, perplexity, ...), its pipeline tag and its usage example come from the task
([`~hf_distill.tasks.Task.card_metrics`], `pipeline_tag`, `usage_example`). The body is rendered from the Jinja
template `model_cards/student.md` (see [`template_path`]).
"""

from __future__ import annotations

import ast
import importlib.resources
import json
import os
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import PretrainedConfig

from .json_values import is_number
from .model_files import METRICS_FILE, TRAINING_PLOT
from .references import is_local_teacher, teacher_reference
from .tasks import CardMetric, Task, get_task, task_name_of_class
from .terms import TERMS

__all__ = [
    "METRICS_FILE",
    "TEMPLATE_NAME",
    "TRAINING_PLOT",
    "build_model_card",
    "task_figures",
    "teacher_license",
    "template_path",
    "write_model_card",
    "write_training_plot",
]

TEMPLATE_NAME = "student.md"
TAGS = ["distillation", "hf-distill", "knowledge-distillation"]
# The `model-index` name of evaluation data that the run did not name (a Python run without a dataset name).
NEUTRAL_DATASET_NAME = "evaluation data"

_NUM_LAYERS_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")
_HIDDEN_SIZE_KEYS = ("hidden_size", "d_model", "n_embd", "dim")
_DATA_FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".arrow")

_TRAINING_LABELS = {
    "num_train_epochs": "Epochs",
    "max_steps": "Max steps",
    "learning_rate": "Learning rate",
    "per_device_train_batch_size": "Batch size per device",
    "gradient_accumulation_steps": "Gradient accumulation steps",
    "num_processes": "Processes",
    "weight_decay": "Weight decay",
    "warmup_ratio": "Warm-up ratio",
    "lr_scheduler_type": "Learning-rate schedule",
    "train_sampling_strategy": "Batch order",
    "seed": "Seed",
    "train_runtime_s": "Training time",
}
_FRAMEWORK_NAMES = {
    "hf_distill": "hf-distill",
    "transformers": "Transformers",
    "torch": "PyTorch",
    "datasets": "Datasets",
    "tokenizers": "Tokenizers",
    "accelerate": "Accelerate",
    "huggingface_hub": "huggingface_hub",
}


def write_model_card(
    output_dir: str,
    task: Task,
    distillation: dict,
    log_history: list[dict],
    *,
    teacher: str | None = None,
    evaluation: tuple[dict[str, float], str] | None = None,
    teacher_name: str | None = None,
    dataset_name: str | None = None,
    license: str | None = None,  # noqa: A002 - the Hub metadata field's name
    language: str | list | None = None,
    model_id: str | None = None,
) -> str:
    """Writes the card of a trained student into `output_dir/README.md` (what
    [`~hf_distill.DistillationTrainer.create_model_card`] and its push do), with the plot of the training and
    evaluation losses of `log_history` (`distillation_training.png`, when matplotlib is installed). Returns the card's
    path.

    Figures come from `distillation_metrics.json` in `output_dir` when the run wrote one, else from `evaluation`: the
    last `trainer.evaluate()` metrics and their key prefix; `teacher` (the teacher's name or path) names the teacher
    and gives the license's default.
    """
    write_training_plot(output_dir, log_history)
    metrics = None
    if not os.path.isfile(os.path.join(output_dir, METRICS_FILE)):
        metrics = {
            "task": task.pipeline_tag,
            "teacher": {
                "name_or_path": teacher_reference(teacher),
                "local": bool(teacher) and is_local_teacher(teacher),
                "license": teacher_license(teacher),
            },
            "student": task_figures(*evaluation) if evaluation else {},
        }
    card = build_model_card(
        output_dir,
        metrics,
        teacher_name=teacher_name,
        dataset_name=dataset_name,
        distillation=distillation,
        license=license,
        language=language,
        model_id=model_id,
        task=task,
    )
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path


# What `trainer.evaluate` reports besides the task metrics: not figures of the model's quality.
_RUN_FIGURES = ("loss", "epoch", "model_preparation_time", "runtime", "samples_per_second", "steps_per_second")


def task_figures(metrics: dict[str, float], prefix: str = "eval") -> dict[str, float]:
    """The model's own figures of an evaluation (task metrics, agreement, KL, loss terms), without `prefix_` and the
    run-time figures (loss, epoch, runtime, samples per second)."""
    figures = {}
    for key, value in metrics.items():
        name = key.removeprefix(f"{prefix}_")
        if name in _RUN_FIGURES or name.endswith(("_runtime", "_per_second")) or name.startswith("loss"):
            continue
        figures[name] = value
    return figures


def write_training_plot(folder: str, log_history: list[dict]) -> str | None:
    """Plots the training loss (and each loss term) and the evaluation loss against the optimizer step into
    `folder/distillation_training.png`, for the model card. Returns the path, or None when matplotlib (an optional
    dependency: `pip install 'hf-distill[demo]'`) is missing or nothing was logged."""
    curves = {}
    for entry in log_history:
        for key, value in entry.items():
            training = key == "loss" or key.startswith("loss_")
            if (training or key == "eval_loss") and is_number(value) and "step" in entry:
                curves.setdefault(key, []).append((entry["step"], value))
    if not curves:
        return None
    try:
        from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone
    except ImportError:
        return None
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    for key in sorted(curves, key=lambda k: (k != "loss", k != "eval_loss", k)):
        steps, values = zip(*curves[key])
        style = {"linewidth": 2} if key in ("loss", "eval_loss") else {"linewidth": 1, "linestyle": "--"}
        label = {"loss": "training loss", "eval_loss": "evaluation loss"}.get(key, f"{key[5:]} term (training)")
        axes.plot(steps, values, marker="o" if len(steps) < 3 else None, label=label, **style)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.set_title("Distillation: training and evaluation loss")
    axes.legend()
    figure.tight_layout()
    path = os.path.join(folder, TRAINING_PLOT)
    os.makedirs(folder, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def template_path() -> Path:
    """Where `model_cards/student.md` is: `hf_distill/model_cards/` is a link to the repository's `model_cards/`
    folder, and the wheel ships the templates there as package data."""
    path = Path(str(importlib.resources.files("hf_distill").joinpath("model_cards", TEMPLATE_NAME)))
    if not path.is_file():
        raise FileNotFoundError(f"the model card template {path} is missing; reinstall hf-distill, which ships it")
    return path


def build_model_card(
    output_dir: str,
    metrics: dict | None = None,
    *,
    teacher_name: str | None = None,
    dataset_name: str | None = None,
    distillation: dict | None = None,
    license: str | None = None,  # noqa: A002 - the Hub metadata field's name
    language: str | list | None = None,
    model_id: str | None = None,
    task: Task | None = None,
) -> ModelCard:
    """
    Render the model card of a saved student.

    Args:
        output_dir (`str`): The student's folder: `config.json`, weights, tokenizer, maybe `distillation_metrics.json`.
        metrics (`dict`, *optional*): The run's metrics (schema of `distillation_metrics.json`); defaults to reading
            `output_dir/distillation_metrics.json` when it exists. Any key may be missing: its row or section is
            left out.
        teacher_name (`str`, *optional*): Overrides `metrics["teacher"]["name_or_path"]`; becomes `base_model` when
            it is a Hub repo id (not a local path).
        dataset_name (`str`, *optional*): Overrides `metrics["dataset"]["name"]`; listed under `datasets` when it is a
            Hub dataset id (not a local file).
        distillation (`dict`, *optional*): Overrides keys of `metrics["distillation"]` (loss weights, temperature).
        license (`str`, *optional*): License id for the metadata, e.g. `"apache-2.0"`. Defaults to the teacher's
            (`metrics["teacher"]["license"]`, see [`teacher_license`]); when neither is known the metadata has none
            and the card says that the student inherits the teacher's license terms.
        language (`str` or `list`, *optional*): Language code(s) for the metadata.
        model_id (`str`, *optional*): The repo id the card is for: its title and the usage snippet's `model=`
            (defaults to `output_dir`, so the snippet runs against the local folder).
        task ([`~hf_distill.tasks.Task`], *optional*): The student's task: its metrics are the card's result rows and
            `model-index` entries. Defaults to the task the metrics name, else the head `config.json` names.

    Returns:
        `huggingface_hub.ModelCard`: Save it with `card.save(path)`; `str(card)` is the README text.
    """
    folder = Path(output_dir)
    if metrics is None and (folder / METRICS_FILE).is_file():
        try:
            metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{folder / METRICS_FILE} is not valid JSON ({err}); fix or delete it") from err
        if not isinstance(metrics, dict):
            raise ValueError(f"{folder / METRICS_FILE} must hold a JSON object, not {type(metrics).__name__}")
    metrics = dict(metrics or {})
    config = _read_json(folder / "config.json")

    teacher = dict(_section(metrics, "teacher"))
    student = dict(_section(metrics, "student"))
    baseline = _section(metrics, "baseline")
    dataset = dict(_section(metrics, "dataset"))
    latency = _section(metrics, "latency")
    training = _section(metrics, "training")
    distill = {**_section(metrics, "distillation"), **(distillation or {})}
    if teacher_name is not None:
        teacher["name_or_path"] = teacher_name
        teacher.pop("local", None)  # named by the caller: a Hub id unless it looks like a path
    if dataset_name is not None:
        dataset["name"] = _public_name(dataset_name)  # never the user's file system layout

    # The saved config is the truth about the student's shape; the metrics fill in what it does not say.
    shape_in_config = {
        "num_layers": _first(config, _NUM_LAYERS_KEYS),
        "hidden_size": _first(config, _HIDDEN_SIZE_KEYS),
    }
    for key, config_value in shape_in_config.items():
        if config_value is not None:
            student[key] = config_value

    task = task if task is not None else _task_of(metrics.get("task"), config)
    pipeline_tag = task.pipeline_tag if task is not None else None
    card_metrics = tuple(task.card_metrics) if task is not None else ()
    teacher_ref = teacher.get("name_or_path")
    teacher_is_hub_id = not teacher.get("local") and _is_hub_id(teacher_ref)
    ds_name = dataset.get("name")
    model_ref = model_id or str(output_dir)
    title = model_id.split("/")[-1] if model_id else folder.resolve().name

    teacher_license_id = teacher.get("license") if isinstance(teacher.get("license"), str) else None
    license_id = license or teacher_license_id
    compression = _compression(_section(metrics, "compression"), card_metrics)
    # An export (int8, ONNX) does not load with `pipeline`: its own snippet replaces the usual one.
    usage = None if compression else _usage(task, model_ref, folder)
    eval_results = _eval_results(student, pipeline_tag, dataset, card_metrics)
    tags = list(TAGS)
    if isinstance(config.get("model_type"), str):
        tags.append(config["model_type"])
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        license=license_id,
        language=language,
        datasets=[ds_name] if ds_name and _is_hub_id(ds_name, dataset=True) else None,
        base_model=teacher_ref if teacher_is_hub_id else None,
        tags=tags,
        model_name=title if eval_results else None,
        eval_results=eval_results or None,
        widget=_widget(usage),
    )

    context = {
        "title": title,
        "pipeline": pipeline_tag,
        "teacher_display": _display_name(teacher_ref),
        "teacher_is_hub_id": teacher_is_hub_id,
        "teacher": teacher,
        "student": student,
        "teacher_layers": _int_list(student.get("teacher_layers")),
        "width": _width(config.get("distillation_width")),
        "labels": _labels(config),
        "peft": _peft(distill.get("peft")),
        "tokenizers": _tokenizers(distill.get("tokenizers")),
        "cache_note": _teacher_outputs_note(distill),
        "teachers": _teachers(distill),
        "architecture": (config.get("architectures") or [None])[0],
        "losses": _losses(distill),
        "temperature": _number(distill.get("temperature")),
        "layer_pairs": _layer_pairs(distill),
        "layer_strategy": _layer_strategy(distill),
        "dataset": dataset,
        "dataset_is_hub_id": bool(ds_name) and _is_hub_id(ds_name, dataset=True),
        "training": _training_rows(training),
        "results": _results(teacher, student, baseline, card_metrics),
        "latency_setup": _latency_setup(latency),
        "summary": _summary(teacher, student, baseline, card_metrics, _section(metrics, "comparison")),
        "verdict": _verdict(_section(metrics, "comparison"), card_metrics),
        "usage": usage,
        "license_note": _license_note(license, teacher_license_id, _display_name(teacher_ref)),
        "training_plot": TRAINING_PLOT if (folder / TRAINING_PLOT).is_file() else None,
        "compression": compression,
        "train_examples": _train_examples(dataset),
        "versions": [(_FRAMEWORK_NAMES.get(k, k), v) for k, v in _section(metrics, "framework_versions").items() if v],
    }
    card = ModelCard.from_template(card_data, template_path=str(template_path()), **context)
    # Sections that are left out leave blank lines behind: at most one blank line in a row.
    return ModelCard(re.sub(r"\n{3,}", "\n\n", str(card)))


# ---- reading the inputs -------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _section(metrics: dict, key: str) -> dict:
    value = metrics.get(key)
    return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else {}


def _first(config: dict, keys) -> Any:
    return next((config[k] for k in keys if isinstance(config.get(k), int)), None)


def _number(value) -> float | None:
    return float(value) if is_number(value) else None


def _width(width) -> str | None:
    """What width pruning kept (`distillation_width` of a student's config), as the card's sentence."""
    if not isinstance(width, dict):
        return None
    teacher = width.get("teacher") or {}
    parts = []
    for key, label in (
        ("num_attention_heads", "attention heads"),
        ("intermediate_size", "feed-forward neurons"),
        ("hidden_size", "hidden size"),
    ):
        before, after = teacher.get(key), width.get(key)
        if after is not None:
            parts.append(f"{label} {before} → {after}" if before not in (None, after) else f"{label} {after}")
    return (
        ", ".join(parts) + "; the teacher's most important ones, ranked by their activations on calibration data "
        "([Minitron](https://arxiv.org/abs/2407.14679))"
    )


def _int_list(value) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else []


def _task_of(name, config: dict) -> Task | None:
    """The task the metrics name (a pipeline tag or task name), else the task of the head `config.json` names; with
    the settings its config gives (a regression head shows MSE and Pearson)."""
    task_class = None
    if isinstance(name, str):
        try:
            task_class = get_task(name)
        except ValueError:
            task_class = None
    for arch in config.get("architectures") or [] if task_class is None else []:
        found = task_name_of_class(arch, bool(config.get("is_encoder_decoder"))) if isinstance(arch, str) else None
        if found is not None:
            task_class = get_task(found)
            break
    if task_class is None:
        return None
    try:
        return task_class.from_model(_SavedModel(PretrainedConfig.from_dict(config)))
    except (AttributeError, TypeError, ValueError):
        return task_class()


class _SavedModel:
    """A model known only by its saved `config.json`: enough for a task to read its settings."""

    def __init__(self, config: PretrainedConfig):
        self.config = config


def _is_hub_id(name, dataset: bool = False) -> bool:
    """A Hub repo id, not a local path or data file: `base_model` / `datasets` must name something on the Hub."""
    if not isinstance(name, str) or not name or os.path.isabs(name) or name.startswith((".", "~")):
        return False
    if dataset and name.lower().endswith(_DATA_FILE_SUFFIXES):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not os.path.exists(name)


def _public_name(name: str) -> str:
    """A dataset's name as a card may publish it: a Hub id as it is, a local path by its file or folder name."""
    if _is_hub_id(name, dataset=True) or ("/" not in name and os.sep not in name):
        return name
    return Path(name).name or name


def _display_name(name) -> str | None:
    if not isinstance(name, str) or not name:
        return None
    return Path(name).name if os.path.isabs(name) else name


def _labels(config: dict) -> list[str]:
    id2label = config.get("id2label")
    if not isinstance(id2label, dict):
        return []
    try:
        ordered = [label for _, label in sorted((int(k), v) for k, v in id2label.items())]
    except (TypeError, ValueError):
        return []
    if all(re.fullmatch(r"LABEL_\d+", str(label)) for label in ordered):
        return []  # the default names say nothing
    return [str(label) for label in ordered]


# ---- what the card says -------------------------------------------------------------------------------------------
def _losses(distill: dict) -> list[dict]:
    """One row per loss term with a weight above 0, described by the term's own declaration (`hf_distill.terms`)."""
    rows = []
    for term in TERMS.values():
        weight = _number(distill.get(term.weight_field))
        if weight is not None and weight > 0:
            rows.append({"weight": f"{weight:g}", "description": term.card(distill)})
    return rows


def _peft(peft) -> str | None:
    """What a peft student's folder holds: the adapter alone, or the model with the adapter merged in."""
    if not isinstance(peft, dict):
        return None
    kind = str(peft.get("peft_type", "PEFT")).upper()
    rank = f" (r = {peft['r']})" if peft.get("r") else ""
    if peft.get("saved") == "merged":
        return f"{kind}{rank}; the adapter is merged into the weights, so this is a plain transformers model."
    return (
        f"{kind}{rank}; this repository holds the adapter only: load it with peft (or transformers with peft "
        "installed) on top of its base model."
    )


def _cache_note(cache) -> str | None:
    if not isinstance(cache, dict):
        return None
    if cache.get("logit_samples"):
        return (
            f"read from a teacher cache holding {cache['logit_samples']} classes drawn per position from the "
            "teacher's distribution, with their frequencies (unbiased on average; Sparse Logit Sampling), not from "
            "the running teacher"
        )
    if cache.get("top_k"):
        return (
            f"read from a teacher cache holding the top {cache['top_k']} classes per position (the rest of the "
            "probability as one bucket), not from the running teacher"
        )
    return "read from a teacher cache holding all the teacher's logits, not from the running teacher"


def _tokenizers(tokenizers) -> str | None:
    """The two tokenizers of a student of another vocabulary than its teacher's, and how the outputs crossed."""
    if not isinstance(tokenizers, dict):
        return None

    def one(role: str) -> str:
        name, size = tokenizers.get(role), tokenizers.get(f"{role}_tokens")
        named = f"`{name}`" if isinstance(name, str) and name else f"the {role}'s own"
        return named + (f" ({size:,} tokens)" if _is_count(size) else "")

    text = f"the teacher reads {one('teacher')}, the student its own, {one('student')}, saved with it"
    alignment = tokenizers.get("alignment")
    return text + (f"; {alignment}" if isinstance(alignment, str) and alignment else "") + "."


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _teacher_outputs_note(distill: dict) -> str | None:
    """Where the soft targets came from when not from the teacher in PyTorch: a cache, an inference engine (with its
    measured agreement), a server."""
    notes = [_cache_note(distill.get("teacher_cache")), _engine_note(distill.get("teacher_engine"))]
    server = distill.get("teacher_server")
    if isinstance(server, dict) and is_number(server.get("top_k")):
        api = {"vllm": "vLLM", "llama.cpp": "llama.cpp's server"}.get(server.get("api"), "an inference server")
        model = f" ({server['model']})" if isinstance(server.get("model"), str) else ""
        notes.append(
            f"the teacher's top {server['top_k']} tokens per position with their log-probabilities, served by "
            f"{api}{model}"
        )
    notes = [note for note in notes if note]
    return "; ".join(notes) if notes else None


def _engine_note(engine) -> str | None:
    if not isinstance(engine, dict) or not is_number(engine.get("top1_agreement")):
        return None
    weights = "int8 weights" if str(engine.get("engine", "")).endswith("int8") else "float32"
    items = f" {engine['sample_items']:,}" if is_number(engine.get("sample_items")) else ""
    kl = f" (KL {engine['kl']:.2g})" if is_number(engine.get("kl")) else ""
    return (
        f"from the teacher run by onnxruntime ({weights}), whose most likely class agreed with the PyTorch teacher's "
        f"on {engine['top1_agreement']:.2%} of{items} sample items{kl}"
    )


def _teachers(distill: dict) -> list[dict]:
    names = distill.get("teachers")
    if not isinstance(names, str) or "," not in names:
        return []
    weights = str(distill.get("teacher_weights") or "").split(",")
    names = [n.strip() for n in names.split(",")]
    weights = weights if len(weights) == len(names) else [""] * len(names)
    return [{"name": n, "weight": w.strip()} for n, w in zip(names, weights)]


def _kind(loss_type) -> str:
    return f" ({loss_type})" if isinstance(loss_type, str) and loss_type else ""


def _layer_pairs(distill: dict) -> list[tuple[int, int]]:
    """The `teacher:student` pairs of an explicit layer map, unless the run is known not to use it (the layer map only
    matters to the hidden-state and attention losses)."""
    spec = distill.get("layer_map")
    weights = [_number(distill.get(k)) for k in ("hidden_weight", "attention_weight")]
    known = [w for w in weights if w is not None]
    if not isinstance(spec, str) or (known and not any(w > 0 for w in known)):
        return []
    pairs = []
    for item in spec.split(","):
        teacher_layer, sep, student_layer = item.strip().partition(":")
        if not sep or not teacher_layer.strip().isdigit() or not student_layer.strip().isdigit():
            return []  # a strategy name ("uniform", ...): shown as such by the template
        pairs.append((int(teacher_layer), int(student_layer)))
    return pairs


def _layer_strategy(distill: dict) -> str | None:
    """A layer-map strategy name (e.g. `uniform`), when the layer map is one and a layer loss uses it."""
    spec = distill.get("layer_map")
    if not isinstance(spec, str) or ":" in spec:
        return None
    return spec if any((_number(distill.get(k)) or 0) > 0 for k in ("hidden_weight", "attention_weight")) else None


def _training_rows(training: dict) -> list[tuple[str, str]]:
    rows = []
    for key in list(_TRAINING_LABELS) + sorted(set(training) - set(_TRAINING_LABELS)):
        if key not in training:
            continue
        value = training[key]
        if key == "train_runtime_s" and _number(value) is not None:
            text = f"{value:.0f} s ({value / 60:.1f} min)"
        elif isinstance(value, float):
            text = f"{value:g}"
        else:
            text = str(value)
        rows.append((_TRAINING_LABELS.get(key, key), text))
    return rows


def _pct(value) -> str | None:
    value = _number(value)
    return None if value is None else f"{value * 100:.2f}%"


def _count(value) -> str | None:
    value = _number(value)
    if value is None:
        return None
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}K"
    return f"{value:.0f}"


def _integer(value) -> str | None:
    value = _number(value)
    return None if value is None else f"{value:.0f}"


def _megabytes(value) -> str | None:
    value = _number(value)
    return None if value is None else (f"{value / 1e6:.1f} MB" if value >= 1e5 else f"{value / 1e6:.3f} MB")


def _ms(value, iqr=None) -> str | None:
    """A latency, with its interquartile range over the measurement's rounds when known: "12.3 ms (IQR 11.9–12.8)"."""
    value = _number(value)
    if value is None:
        return None
    spread = _interval(iqr)
    return f"{value:.1f} ms" + (f" (IQR {spread[0]:.1f}–{spread[1]:.1f})" if spread else "")


def _speedup(teacher: dict, model: dict) -> str | None:
    """How many times faster than the teacher: the median of the per-round ratios with their interquartile range
    ("3.21× (IQR 3.05–3.40)", [`~hf_distill.measure.speedup_figures`]), else, for figures measured without rounds,
    the ratio of the two latencies."""
    measured = model.get("speedup")
    if isinstance(measured, dict) and _number(measured.get("median")) is not None:
        spread = _interval(measured.get("iqr"))
        return f"{measured['median']:.2f}×" + (f" (IQR {spread[0]:.2f}–{spread[1]:.2f})" if spread else "")
    teacher_ms, model_ms = _number(teacher.get("latency_ms_per_batch")), _number(model.get("latency_ms_per_batch"))
    if teacher_ms is None or not model_ms:
        return None
    return f"{teacher_ms / model_ms:.2f}×"


def _interval(value) -> tuple[float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(v) is not None for v in value):
        return float(value[0]), float(value[1])
    return None


_SHAPE_ROWS = ("Transformer layers", "Hidden size")


def _metric_value(metric: CardMetric, value) -> str | None:
    value = _number(value)
    if value is None:
        return None
    return f"{value * 100:.2f}%" if metric.percent else f"{value:.4g}"


def _results(teacher: dict, student: dict, baseline: dict, card_metrics: tuple[CardMetric, ...]) -> dict | None:
    """The comparison table: columns teacher / student (/ baseline), the task's metrics then the sizes, only rows with
    at least one known value."""
    columns = [("Teacher", teacher), ("Student (distilled)", student)]
    if baseline:
        columns.append(("Student without teacher (baseline)", baseline))
    row_specs = [(m.label, lambda values, m=m: _metric_value(m, values.get(m.key))) for m in card_metrics]
    row_specs += [
        ("Agreement with the teacher", lambda m: _pct(m.get("teacher_agreement"))),
        ("Transformer layers", lambda m: _integer(m.get("num_layers"))),
        ("Hidden size", lambda m: _integer(m.get("hidden_size"))),
        ("Parameters", lambda m: _count(m.get("parameters"))),
        ("Size on disk", lambda m: _megabytes(m.get("size_bytes"))),
        ("Latency per batch", lambda m: _ms(m.get("latency_ms_per_batch"), m.get("latency_iqr_ms"))),
        ("Speed-up vs. teacher", lambda m: _speedup(teacher, m)),
    ]
    rows = []
    for label, fmt in row_specs:
        cells = [fmt(values) if values else None for _, values in columns]
        if any(cell is not None for cell in cells):
            rows.append({"label": label, "cells": [cell if cell is not None else "–" for cell in cells]})
    if all(row["label"] in _SHAPE_ROWS for row in rows):
        return None  # nothing measured: the shapes alone are in "Model details"
    return {"columns": [name for name, _ in columns], "rows": rows}


def _latency_setup(latency: dict) -> str | None:
    parts = []
    if "batch_size" in latency:
        parts.append(f"batches of {latency['batch_size']}")
    if "sequence_length" in latency:
        parts.append(f"sequence length {latency['sequence_length']}")
    if "threads" in latency:
        parts.append(f"{latency['threads']} thread{'s' if latency['threads'] != 1 else ''}")
    if "device" in latency:
        parts.append(f"on {latency['device']}")
    return ", ".join(parts) if parts else None


def _summary(
    teacher: dict, student: dict, baseline: dict, card_metrics: tuple[CardMetric, ...], comparison: dict | None = None
) -> list[str]:
    """Sentences that compare the models, each only when both figures are known; the task's headline metric (its
    first card metric) is the one compared."""
    sentences = []
    t_params, s_params = _number(teacher.get("parameters")), _number(student.get("parameters"))
    if t_params and s_params is not None:
        sentences.append(f"The student has {s_params / t_params * 100:.0f}% of the teacher's parameters.")
    speedup = _speedup(teacher, student)
    if speedup:
        sentences.append(f"It runs {speedup} faster than the teacher in the latency measurement below.")
    if not card_metrics:
        return sentences
    metric = card_metrics[0]
    name = metric.label[0].lower() + metric.label[1:] if metric.label[1:2].islower() else metric.label
    t_value, s_value, b_value = (_number(m.get(metric.key)) for m in (teacher, student, baseline))
    if t_value and s_value is not None:
        if metric.higher_is_better:
            sentences.append(f"It keeps {s_value / t_value * 100:.1f}% of the teacher's {name}.")
        else:
            sentences.append(f"Its {name} is {s_value:.4g}, the teacher's {t_value:.4g}.")
    # A gain is stated only with its budget, its p-value and its seeds: the comparison's verdict, never a bare
    # difference of two figures.
    if comparison and comparison.get("verdict"):
        sentences.append(f"Against the same student trained without the teacher: {comparison['verdict']}.")
    return sentences


def _verdict(comparison: dict, card_metrics: tuple[CardMetric, ...]) -> str | None:
    """The verdict of `--baseline` with the numbers behind it: the test, the disagreements, the seeds, calibration."""
    if not comparison or not comparison.get("verdict"):
        return None
    metric = next((m for m in card_metrics if m.key == comparison.get("metric")), None)
    percent = metric.percent if metric is not None else True

    def amount(value) -> str:
        return f"{value * 100:+.2f} points" if percent else f"{value:+.4g}"

    budget = _budget_sentence(comparison.get("budget") or {})
    parts = [
        f"{comparison['verdict'][0].upper()}{comparison['verdict'][1:]}, against the same student trained from the "
        f"same starting weights without the teacher: the hard-label loss alone, the same seed, batch order and "
        f"settings, {budget}."
    ]
    pooled, rows = comparison.get("pooled") or {}, comparison.get("per_seed") or []
    if "only_distilled_right" in pooled:
        parts.append(
            f"McNemar's exact test: only the distilled student is right on {pooled['only_distilled_right']} "
            f"evaluation examples, only the baseline on {pooled['only_baseline_right']}"
            f"{' (all seeds pooled)' if len(rows) > 1 else ''}."
        )
    elif "interval_95" in pooled:
        low, high = pooled["interval_95"]
        parts.append(f"Paired bootstrap over the evaluation examples: 95% interval {amount(low)} to {amount(high)}.")
    mean = comparison.get("mean") or {}
    if len(rows) > 1 and _number(mean.get("difference")) is not None:
        parts.append(
            f"Over {len(rows)} seeds the difference was {amount(mean['difference'])} on average "
            f"(standard deviation {abs(mean['difference_std']) * (100 if percent else 1):.2f}"
            f"{' points' if percent else ''}; {amount(mean['difference_min'])} to {amount(mean['difference_max'])})."
        )
    d_time, b_time = (_number(mean.get(f"{r}_train_runtime_s")) for r in ("distilled", "baseline"))
    if d_time is not None and b_time is not None:
        each = f"on average over {len(rows)} seeds" if len(rows) > 1 else "wall-clock"
        parts.append(f"Training took {_seconds(d_time)} with the teacher and {_seconds(b_time)} without it ({each}).")
    d_ece, b_ece = (_number(mean.get(f"{r}_expected_calibration_error")) for r in ("distilled", "baseline"))
    if d_ece is not None and b_ece is not None:
        parts.append(f"Calibration (expected calibration error, 15 bins): distilled {d_ece:.3f}, baseline {b_ece:.3f}")
        parts[-1] += "."
    return " ".join(parts)


def _seconds(value: float) -> str:
    return f"{value:,.0f} s" if value >= 10 else f"{value:.1f} s"


def _budget_sentence(budget: dict) -> str:
    """How long each side of a comparison trained: "for the same 376 optimizer steps (2 epochs over its 6,000
    labelled examples; the distilled run: 1 epoch over 12,000 examples)"."""
    distilled, baseline = budget.get("distilled") or {}, budget.get("baseline") or {}

    def over(side: dict, what: str) -> str:
        epochs, examples = _number(side.get("epochs")), _number(side.get("train_examples"))
        if epochs is None or examples is None:
            return ""
        return f"{epochs:g} epoch{'' if epochs == 1 else 's'} over {int(examples):,} {what}"

    d_steps, b_steps = distilled.get("optimizer_steps"), baseline.get("optimizer_steps")
    if d_steps is None or b_steps is None:
        return "for the budget the run was given"
    b_over, d_over = over(baseline, "labelled examples"), over(distilled, "examples")
    if d_steps == b_steps:
        detail = f" ({b_over}; the distilled run: {d_over})" if b_over and d_over and b_over != d_over else ""
        return f"for the same {b_steps:,} optimizer steps{detail}"
    return f"for {b_steps:,} optimizer steps{f' ({b_over})' if b_over else ''} against the distilled run's {d_steps:,}"


def _compression(compression: dict, card_metrics: tuple[CardMetric, ...]) -> dict | None:
    """The trade-off table of a compressed variant's card (`compression_metrics.json` of [`~hf_distill.compress`]):
    one row per model measured, this variant's in bold, with the export's verdict against the tolerance."""
    models = compression.get("models") if isinstance(compression, dict) else None
    if not models:
        return None
    batches = [str(b) for b in (compression.get("latency") or {}).get("batch_sizes", [])]
    columns = ["Model", "Format"] + [m.label for m in card_metrics]
    columns += ["Agreement with the student", "Agreement with the teacher", "Parameters", "Size on disk"]
    columns += [f"Latency, batch {b}" for b in batches]
    with_speedup = any(isinstance(facts, dict) and facts.get("speedup") for facts in models.values())
    if with_speedup:
        columns += [f"Speed-up vs. teacher, batch {b}" for b in batches]
    rows, verdicts = [], []
    names = {"teacher": "Teacher", "student": "Distilled student"}
    for name, facts in models.items():
        label = names.get(name, name)
        cells = [f"**{label}**" if name == compression.get("variant") else label, str(facts.get("kind", ""))]
        cells += [_metric_value(m, facts.get(m.key)) or "–" for m in card_metrics]
        cells += [_pct(facts.get("student_agreement")) or "–", _pct(facts.get("teacher_agreement")) or "–"]
        cells += [_count(facts.get("parameters")) or "–", _megabytes(facts.get("size_bytes")) or "–"]
        cells += [
            _ms((facts.get("latency_ms") or {}).get(b), (facts.get("latency_iqr_ms") or {}).get(b)) or "–"
            for b in batches
        ]
        if with_speedup:
            cells += [_speedup({}, {"speedup": (facts.get("speedup") or {}).get(b)}) or "–" for b in batches]
        rows.append(cells)
        if "drop_points" in facts:
            within = facts.get("within_tolerance")
            verdicts.append(
                f"`{name}` loses {facts['drop_points']:.2f} points against the float student: "
                + ("within" if within else "**more than**")
                + f" the tolerance of {compression.get('max_accuracy_drop_points')} points."
            )
    latency = compression.get("latency") or {}
    return {
        "variant": compression.get("variant"),
        "columns": columns,
        "rows": rows,
        "verdicts": verdicts,
        "plot": compression.get("plot"),
        "usage": compression.get("usage"),
        "latency_setup": _latency_setup({k: v for k, v in latency.items() if k != "batch_size"}),
    }


def _train_examples(dataset: dict) -> str | None:
    """How many examples the student learnt from: the labelled ones, and the transfer set's apart."""
    labelled, unlabelled = _integer(dataset.get("train_examples")), _integer(dataset.get("unlabeled_examples"))
    if labelled is None:
        return None
    if unlabelled is None:
        return labelled
    augmented = _integer(dataset.get("augmented_examples"))
    made = f", {augmented} of them augmented copies of the training texts (`--augment`)" if augmented else ""
    return (
        f"{labelled} labelled, plus {unlabelled} unlabelled (a transfer set{made}: only the teacher's soft targets "
        "teach)"
    )


def _usage(task: Task | None, model_ref: str, folder: Path) -> dict | None:
    example = task.usage_example if task is not None else None
    if not example:
        return None
    variable, call = example
    if "{mask_token}" in call:
        tokenizer_config = _read_json(folder / "tokenizer_config.json")
        mask = tokenizer_config.get("mask_token") or _read_json(folder / "special_tokens_map.json").get("mask_token")
        mask = mask.get("content") if isinstance(mask, dict) else mask
        call = call.replace("{mask_token}", mask or "[MASK]")
    return {"variable": variable, "model": model_ref, "call": call}


def _widget(usage: dict | None) -> list[dict] | None:
    """The Hub's inference widget example: the inputs of the task's usage example (`classifier("I love this
    movie!")` gives `text`; question answering's `question=` / `context=` give `text` and `context`)."""
    if usage is None:
        return None
    try:
        call = ast.parse(usage["call"], mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(call, ast.Call):
        return None
    example = {}
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        example["text"] = call.args[0].value
    for keyword in call.keywords:
        value = keyword.value.value if isinstance(keyword.value, ast.Constant) else None
        if isinstance(value, str) and keyword.arg in ("text", "question", "context"):
            example["context" if keyword.arg == "context" else "text"] = value
    return [example] if "text" in example else None


def teacher_license(name_or_path) -> str | None:
    """The license id in the metadata of the teacher's card: its folder's `README.md`, or for a Hub id the card in
    the local Hub cache (never a download). None when there is no card or it names no license."""
    if not isinstance(name_or_path, str) or not name_or_path:
        return None
    readme = os.path.join(name_or_path, "README.md")
    if not os.path.isdir(name_or_path):
        if not _is_hub_id(name_or_path):
            return None
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(name_or_path, "README.md")
        except (HFValidationError, ValueError, OSError):
            return None
        if not isinstance(cached, str):
            return None
        readme = cached
    try:
        found = ModelCard.load(readme, ignore_metadata_errors=True).data.to_dict().get("license")
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return found if isinstance(found, str) and found else None


def _license_note(given: str | None, teacher_license_id: str | None, teacher: str | None) -> str | None:
    """What the card says about the license: taken from the teacher, or unknown (the teacher's terms apply)."""
    derived = "a distilled model is derived from its teacher's weights and predictions"
    if given:
        return None  # the user chose it; the metadata says it
    if teacher_license_id:
        named = f" `{teacher}`" if teacher else ""
        return (
            f"This model is released under `{teacher_license_id}`, the license of its teacher{named}: {derived}, "
            "so it inherits the teacher's license terms."
        )
    return (
        f"No license is recorded for the teacher: {derived}, so the student inherits the teacher's license terms. "
        "Check them before using or publishing this model."
    )


def _eval_results(
    student: dict, pipeline_tag: str | None, dataset: dict, card_metrics: tuple[CardMetric, ...]
) -> list[EvalResult]:
    """The `model-index` entries: the student's value of each of the task's card metrics, on the data it was measured
    on (the evaluation file for local data, never the training file; the Hub dataset's split otherwise), whenever the
    card's table shows them. Data known by no name (a Python run that named none) is called "evaluation data"; a
    local path is named by its file name only (the user's file system is not published)."""
    name = dataset.get("eval_file") or dataset.get("name")
    name = _public_name(name) if isinstance(name, str) and name.strip() else NEUTRAL_DATASET_NAME
    results = []
    for metric in card_metrics:
        value = _number(student.get(metric.key))
        if value is None:
            continue
        results.append(
            EvalResult(
                task_type=pipeline_tag or "other",
                dataset_type=name,
                dataset_name=name,
                dataset_split=dataset.get("eval_split"),
                metric_type=metric.model_index_type,
                metric_name=metric.label,
                metric_value=value,
                metric_args=metric.args,
            )
        )
    return results
