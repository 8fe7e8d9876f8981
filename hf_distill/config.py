"""`DistillationConfig`: the training arguments of a distillation run."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers import TrainingArguments

from .layer_map import LAYER_MAP_STRATEGIES, parse_layer_pairs

# The loss terms, by the name they are logged under (`loss_<name>`), and the config field holding their weight.
LOSS_WEIGHT_FIELDS = {
    "kd": "kd_weight",
    "task": "task_weight",
    "logit_mse": "logit_mse_weight",
    "hidden": "hidden_weight",
    "attention": "attention_weight",
    "similarity": "similarity_weight",
    "relation": "relation_weight",
}


@dataclass
class DistillationConfig(TrainingArguments):
    r"""[`~transformers.TrainingArguments`] for [`DistillationTrainer`], plus what distillation needs.

    The loss is a weighted sum of terms, each logged separately as `loss_<term>`:

    $$\mathcal{L} = w_{kd} \, T^2 \mathrm{KL}(p^t_T \| p^s_T) + w_{task} \, \mathcal{L}_{task}
        + w_{mse} \, \|z^s - z^t\|^2 + w_{hidden} \, \mathcal{L}_{hidden} + w_{attn} \, \mathcal{L}_{attn}$$

    Every field is a command-line flag through [`~transformers.HfArgumentParser`], and can be set in a YAML recipe.
    The teacher itself may also be passed to [`DistillationTrainer`] as a model object; a path or Hub id goes here so
    that the config stays serialisable.
    """

    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Path or Hub id of the teacher model. Can be omitted when a teacher model object is passed to "
            "DistillationTrainer."
        },
    )
    teacher_weights: str | None = field(
        default=None,
        metadata={
            "help": "With several teachers (teacher_model_name_or_path 'a,b' or a list): the weight of each one's "
            "soft targets, e.g. '0.7,0.3' (normalised to sum to 1; default: equal). The soft targets are the "
            "weighted average of the teachers' distributions at the temperature."
        },
    )
    intermediate_teacher: int = field(
        default=0,
        metadata={
            "help": "With several teachers: which one (0-based) the hidden-state, attention and relation losses "
            "learn from."
        },
    )
    teacher_cache: str | None = field(
        default=None,
        metadata={
            "help": "A teacher cache folder (`hf-distill cache`): training reads the teacher's stored outputs "
            "instead of running it. The cache must have been built from this training data and teacher; anything "
            "else is refused."
        },
    )
    teacher_model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for the teacher's `from_pretrained`, as a dict or a JSON string, e.g. "
            '\'{"dtype": "bfloat16", "revision": "main"}\'.'
        },
    )
    teacher_dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto",
        metadata={
            "help": "Precision the teacher runs in, whatever the student trains in: 'auto' keeps the teacher as "
            "loaded; 'bfloat16' or 'float16' halve its memory and speed up its forward pass on GPUs."
        },
    )
    teacher_on_cpu: bool = field(
        default=False,
        metadata={
            "help": "Keep the teacher on the CPU when accelerator memory is short: each batch is copied to the CPU "
            "for the teacher's forward pass and its outputs are copied back. Slow; not with DeepSpeed ZeRO-3 or FSDP."
        },
    )
    temperature: float = field(
        default=2.0,
        metadata={"help": "Softmax temperature T of the soft targets (> 0). The KL term is scaled by T^2."},
    )
    kd_weight: float = field(
        default=0.5, metadata={"help": "Weight of the soft-target KL divergence to the teacher (>= 0)."}
    )
    task_weight: float = field(
        default=0.5, metadata={"help": "Weight of the ordinary hard-label task loss (>= 0). Needs labels."}
    )
    logit_mse_weight: float = field(
        default=0.0, metadata={"help": "Weight of the mean squared error between student and teacher logits (>= 0)."}
    )
    hidden_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the hidden-state loss on the pairs of `layer_map` (>= 0). When the widths differ a "
            "learned linear projection maps the student to the teacher's width; it is kept in checkpoints but not in "
            "the saved student."
        },
    )
    hidden_loss_type: Literal["mse", "cosine"] = field(
        default="mse",
        metadata={"help": "Hidden-state loss: 'mse' (FitNets, TinyBERT) or 'cosine' (1 - cosine, as DistilBERT)."},
    )
    attention_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the attention-map loss on the pairs of `layer_map` (>= 0). Needs the same number of "
            "heads in teacher and student; switches both models to eager attention, which returns attention maps."
        },
    )
    attention_loss_type: Literal["kl", "mse"] = field(
        default="kl",
        metadata={"help": "Attention loss: 'kl' (KL between attention distributions) or 'mse'."},
    )
    similarity_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the similarity-preserving loss (Tung & Mori 2019) on the pairs of `layer_map` (>= 0): "
            "the student matches the teacher's matrix of similarities between the examples of a batch, computed "
            "from each example's hidden states averaged over its real tokens. Works across widths, with no "
            "projection."
        },
    )
    relation_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the MiniLM self-attention relation loss (>= 0): KL between the teacher's and the "
            "student's query-query, key-key and value-value relations of `relation_layers`, taken from the models' "
            "own projections (works with sdpa attention, any head counts)."
        },
    )
    relation_layers: str = field(
        default="last",
        metadata={
            "help": "Which layers the relation loss compares: 'last' (the teacher's last layer and the student's "
            "last, as MiniLM) or 'teacher:student' such as '9:4' (MiniLMv2 takes an upper-middle teacher layer of "
            "large teachers), numbered 1..num_hidden_layers."
        },
    )
    relation_heads: int | None = field(
        default=None,
        metadata={
            "help": "Number of relation heads the projections are split into (the same on both sides; must divide "
            "every query/key/value width). Default: the teacher's number of attention heads."
        },
    )
    relation_types: str = field(
        default="query,key,value",
        metadata={"help": "Which relations the relation loss averages: any of query, key, value (comma-separated)."},
    )
    peft_config: dict | str | None = field(
        default=None,
        metadata={
            "help": "Train the student through PEFT: a peft config as a dict or JSON string, e.g. "
            '\'{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]}\'. Only the '
            "adapter (and the hidden-state projections) train. `task_type` defaults to the student's task."
        },
    )
    merge_adapter_on_save: bool = field(
        default=False,
        metadata={
            "help": "With peft_config: save the final student with the adapter merged into its weights (a plain "
            "transformers model) instead of the adapter alone. Checkpoints always hold the adapter."
        },
    )
    layer_map: str = field(
        default="uniform",
        metadata={
            "help": "Which teacher layer each student layer learns from, for the hidden-state and attention losses: "
            f"a strategy ({', '.join(LAYER_MAP_STRATEGIES)}) or explicit teacher:student pairs such as "
            "'2:1,4:2,6:3', numbered as hidden_states are (0 is the embedding output). In Python or YAML a list of "
            "[teacher, student] pairs is accepted too."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}; try 1.0 to 4.0 (DistilBERT used 2.0)")
        for field_name in LOSS_WEIGHT_FIELDS.values():
            weight = getattr(self, field_name)
            if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
                raise ValueError(f"{field_name} must be a finite number >= 0, got {weight!r}")
        if not any(self.loss_weights.values()):
            raise ValueError(
                f"all loss weights are 0 ({', '.join(LOSS_WEIGHT_FIELDS.values())}): set at least one above 0, "
                "e.g. kd_weight=0.5 and task_weight=0.5"
            )
        for field_name, choices in (
            ("hidden_loss_type", ("mse", "cosine")),
            ("attention_loss_type", ("kl", "mse")),
            ("teacher_dtype", ("auto", "float32", "bfloat16", "float16")),
        ):
            if getattr(self, field_name) not in choices:
                raise ValueError(f"{field_name} must be one of {choices}, got {getattr(self, field_name)!r}")
        if not (isinstance(self.layer_map, str) and self.layer_map in LAYER_MAP_STRATEGIES):
            # Explicit pairs: check their form now; their range is checked against the models by the trainer.
            pairs = parse_layer_pairs(self.layer_map)
            self.layer_map = ",".join(f"{t}:{s}" for t, s in pairs)
        if isinstance(self.teacher_model_name_or_path, (list, tuple)):
            self.teacher_model_name_or_path = ",".join(str(p) for p in self.teacher_model_name_or_path)
        if isinstance(self.teacher_weights, (list, tuple)):
            self.teacher_weights = ",".join(str(w) for w in self.teacher_weights)
        if self.teacher_weights is not None:
            weights = _parse_numbers(self.teacher_weights, "teacher_weights")
            if any(w < 0 or not math.isfinite(w) for w in weights) or not sum(weights) > 0:
                raise ValueError(
                    f"teacher_weights must be numbers >= 0 with a positive sum, got {self.teacher_weights!r}"
                )
            paths = self.teacher_paths
            if paths and len(paths) != len(weights):
                raise ValueError(
                    f"teacher_weights has {len(weights)} weights but teacher_model_name_or_path names {len(paths)} "
                    f"teachers ({self.teacher_model_name_or_path!r}); give one weight per teacher"
                )
        if not isinstance(self.intermediate_teacher, int) or self.intermediate_teacher < 0:
            raise ValueError(f"intermediate_teacher must be a teacher index >= 0, got {self.intermediate_teacher!r}")
        relations = [r.strip() for r in str(self.relation_types).split(",") if r.strip()]
        if not relations or any(r not in ("query", "key", "value") for r in relations):
            raise ValueError(
                f"relation_types must be a comma-separated subset of query, key, value, got {self.relation_types!r}"
            )
        self.relation_types = ",".join(relations)
        if self.relation_layers != "last":
            try:
                pairs = parse_layer_pairs(self.relation_layers)
            except ValueError:
                pairs = []
            if len(pairs) != 1 or min(pairs[0]) < 1:
                raise ValueError(
                    f"relation_layers must be 'last' or one 'teacher:student' pair of transformer layers (from 1), "
                    f"got {self.relation_layers!r}"
                )
            self.relation_layers = f"{pairs[0][0]}:{pairs[0][1]}"
        if self.relation_heads is not None and (not isinstance(self.relation_heads, int) or self.relation_heads < 1):
            raise ValueError(f"relation_heads must be a whole number >= 1, got {self.relation_heads!r}")
        self.peft_config = _parse_json_dict(self.peft_config, "peft_config")
        self.teacher_model_init_kwargs = _parse_json_dict(self.teacher_model_init_kwargs, "teacher_model_init_kwargs")

    def distillation_settings(self) -> dict[str, float | str]:
        """The settings that define the distillation (for the metrics file and the model card)."""
        settings = {
            "temperature": self.temperature,
            **{f"{name}_weight": weight for name, weight in self.loss_weights.items()},
            "hidden_loss_type": self.hidden_loss_type,
            "attention_loss_type": self.attention_loss_type,
            "layer_map": self.layer_map,
        }
        if self.relation_weight:
            settings.update(relation_layers=self.relation_layers, relation_types=self.relation_types)
        if len(self.teacher_paths) > 1:
            settings.update(teachers=self.teacher_model_name_or_path, teacher_weights=self.teacher_weights)
        if self.peft_config:
            settings["peft"] = {**self.peft_config, "saved": "merged" if self.merge_adapter_on_save else "adapter"}
        return settings

    @property
    def teacher_paths(self) -> list[str]:
        """The teachers named by `teacher_model_name_or_path` (comma-separated for several)."""
        if not self.teacher_model_name_or_path:
            return []
        return [p.strip() for p in self.teacher_model_name_or_path.split(",") if p.strip()]

    @property
    def teacher_weight_list(self) -> list[float] | None:
        """`teacher_weights` as numbers (not normalised), or `None` (equal weights)."""
        return _parse_numbers(self.teacher_weights, "teacher_weights") if self.teacher_weights is not None else None

    @property
    def loss_weights(self) -> dict[str, float]:
        """The weight of each loss term, by term name (`kd`, `task`, `logit_mse`, `hidden`, `attention`)."""
        return {name: float(getattr(self, field_name)) for name, field_name in LOSS_WEIGHT_FIELDS.items()}


def _parse_numbers(value: str, name: str) -> list[float]:
    try:
        return [float(x) for x in str(value).split(",") if x.strip()]
    except ValueError as error:
        raise ValueError(f"{name} must be comma-separated numbers such as '0.7,0.3', got {value!r}") from error


def _parse_json_dict(value: Any, name: str) -> dict | None:
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(
                f'{name} is not valid JSON ({error}): {value!r}; expected e.g. \'{{"dtype": "bfloat16"}}\''
            ) from error
        if isinstance(parsed, dict):
            return parsed
    raise ValueError(f"{name} must be a dict or a JSON object string, got {value!r}")
