"""`DistillationConfig`: the training arguments of a distillation run."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers import TrainingArguments

from .completions import check_completion_settings, uses_completions
from .layer_map import LAYER_MAP_STRATEGIES, LAYER_STRATEGIES, parse_layer_pairs
from .losses import DIVERGENCES
from .references import teacher_reference
from .teacher_server import check_server_url
from .terms import TERMS, active_terms, needs_of

_RELATION_TYPES = ("query", "key", "value")


def _weight(name: str):
    """The weight field of the loss term `name`: its default and help are the term's declaration's (`terms.py`)."""
    term = TERMS[name]
    return field(default=term.default_weight, metadata={"help": term.help})


def _list_terms(cls):
    """Lists the loss terms in the config's docstring, from their declarations in `terms.py`."""
    rows = "\n".join(
        f"    - `{term.weight_field}` (default {term.default_weight:g}), logged as `loss_{term.name}`, averaged over "
        f"{term.unit}: {term.help}"
        for term in TERMS.values()
    )
    cls.__doc__ = cls.__doc__.replace("    {terms}", rows)
    return cls


@dataclass
@_list_terms
class DistillationConfig(TrainingArguments):
    r"""[`~transformers.TrainingArguments`] for [`DistillationTrainer`], plus what distillation needs.

    The loss is a weighted sum of terms, each logged separately as `loss_<term>` (`eval_loss_<term>` in evaluation,
    where `eval_loss` is the same weighted sum of the exact per-item means):

    $$\mathcal{L} = w_{label} \, \mathcal{L}_{label} + w_{kd} \, T^2 D(p^t_T, p^s_T)
        + w_{mse} \, \|z^s - z^t\|^2 + w_{hidden} \, \mathcal{L}_{hidden} + w_{attn} \, \mathcal{L}_{attn}
        + w_{sim} \, \mathcal{L}_{sim} + w_{rel} \, \mathcal{L}_{rel}$$

    $D$ is the soft-target divergence that `divergence` names (forward KL by default; see [`~hf_distill.losses`]).

    The terms (declared in `hf_distill/terms.py`; each weight is a field, >= 0, 0 turns the term off):

    {terms}

    Every field is a command-line flag through [`~transformers.HfArgumentParser`], and can be set in a YAML recipe.
    The teacher itself may also be passed to [`DistillationTrainer`] as a model object; a path or Hub id goes here so
    that the config stays serialisable.
    """

    # Fields given as JSON strings on the command line, parsed into dicts by TrainingArguments (as TRL does).
    _VALID_DICT_FIELDS = TrainingArguments._VALID_DICT_FIELDS + ["peft_config", "teacher_model_init_kwargs"]

    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Path or Hub id of the teacher model (several teachers: comma-separated, or a list in Python or "
            "YAML). Can be omitted when a teacher model object is passed to DistillationTrainer."
        },
    )
    teacher_weights: list[float] | str | None = field(
        default=None,
        metadata={
            "help": "With several teachers (teacher_model_name_or_path 'a,b' or a list): the weight of each one's "
            "soft targets, e.g. '0.7,0.3' or a list (normalised to sum to 1; default: equal). The soft targets are "
            "the weighted average of the teachers' distributions at the temperature. Read as a list of numbers."
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
    teacher_engine: Literal["pytorch", "onnxruntime", "onnxruntime-int8"] = field(
        default="pytorch",
        metadata={
            "help": "What runs an encoder teacher's forward passes (live, and for `hf-distill cache`): 'pytorch', or "
            "'onnxruntime' / 'onnxruntime-int8' (the teacher exported to ONNX at start-up, float or int8 weights, "
            "with the hidden states the layer losses compare as extra outputs; CPU). Its agreement with the PyTorch "
            "teacher is measured on a sample of the training data at start-up, refused below "
            "teacher_engine_max_kl, and written to the model card.",
            "choices": ["pytorch", "onnxruntime", "onnxruntime-int8"],
        },
    )
    teacher_engine_max_kl: float = field(
        default=0.01,
        metadata={
            "help": "With teacher_engine onnxruntime(-int8): the largest mean KL divergence per item (example or "
            "token), from the PyTorch teacher's distribution to the engine's at the temperature, on the start-up "
            "sample; a larger one is refused (>= 0)."
        },
    )
    teacher_server_url: str | None = field(
        default=None,
        metadata={
            "help": "Causal LMs: the teacher behind an inference server instead of a local model, e.g. "
            "http://127.0.0.1:8000 (vLLM, llama.cpp's server, or an OpenAI-compatible server that echoes prompt "
            "log-probabilities): its top-k log-probabilities of every position (teacher_server_top_k) are the soft "
            "targets, at temperature 1. Checked at start-up: the server must tokenise as the student's tokenizer."
        },
    )
    teacher_server_model: str | None = field(
        default=None,
        metadata={"help": "The model name the teacher server serves (default: the one its /v1/models lists)."},
    )
    teacher_server_api: Literal["vllm", "llama.cpp", "openai-echo"] = field(
        default="vllm",
        metadata={
            "help": "The teacher server's API: 'vllm' (prompt_logprobs of token ids, several examples a request), "
            "'llama.cpp' (llama-server's /completion with n_probs, one request per position), 'openai-echo' "
            "(/v1/completions with echo and logprobs, e.g. llama-cpp-python's server; byte-level BPE tokenizers).",
            "choices": ["vllm", "llama.cpp", "openai-echo"],
        },
    )
    teacher_server_top_k: int = field(
        default=32, metadata={"help": "With teacher_server_url: the teacher's tokens per position (>= 1)."}
    )
    teacher_server_api_key_env: str = field(
        default="HF_DISTILL_TEACHER_API_KEY",
        metadata={
            "help": "The environment variable holding the teacher server's API key (sent as a bearer token; unset: "
            "none). The key itself is never a flag, and never logged or written."
        },
    )
    teacher_server_timeout: float = field(
        default=60.0, metadata={"help": "With teacher_server_url: seconds one request may take (> 0)."}
    )
    teacher_server_retries: int = field(
        default=4,
        metadata={
            "help": "With teacher_server_url: further tries of a request that timed out, lost its connection or got "
            "429 / 5xx, with exponential back-off (>= 0); then the run stops with an error naming the server and step."
        },
    )
    teacher_server_concurrency: int = field(
        default=4, metadata={"help": "With teacher_server_url: requests in flight at once (>= 1)."}
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
        metadata={"help": "Softmax temperature T of the soft targets (> 0). The soft-target term is scaled by T^2."},
    )
    # One weight per loss term of `terms.py` (tests/test_config.py checks that they match, in its order).
    label_weight: float = _weight("label")
    kd_weight: float = _weight("kd")
    logit_mse_weight: float = _weight("logit_mse")
    hidden_weight: float = _weight("hidden")
    attention_weight: float = _weight("attention")
    similarity_weight: float = _weight("similarity")
    relation_weight: float = _weight("relation")
    divergence: Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "tv"] = field(
        default="forward_kl",
        metadata={
            "help": "The divergence of the soft-target (kd) term, between the teacher's and the student's "
            "distributions at the temperature, scaled by T^2: 'forward_kl' KL(teacher || student) (Hinton et al. "
            "2015); 'reverse_kl' KL(student || teacher), mode-seeking; 'jsd' the generalised Jensen-Shannon "
            "divergence with weight divergence_beta (GKD, Agarwal et al. 2024); 'skew_kl' KL(teacher || alpha "
            "teacher + (1 - alpha) student) with alpha = divergence_alpha (DistiLLM, Ko et al. 2024); 'tv' the total "
            "variation distance. Regression heads use the squared error whatever this says.",
        },
    )
    divergence_beta: float = field(
        default=0.5,
        metadata={
            "help": "With divergence='jsd': the teacher's weight beta in the mixture m = beta teacher + (1 - beta) "
            "student, in [0, 1]; 0.5 is the symmetric JSD, and as in TRL's GKD 0 means forward KL and 1 reverse KL."
        },
    )
    divergence_alpha: float = field(
        default=0.1,
        metadata={
            "help": "With divergence='skew_kl': the teacher's share alpha of the mixture the teacher is compared "
            "with, in [0, 1); 0 is the forward KL, DistiLLM uses 0.1."
        },
    )
    loss_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Compute the soft-target (kd) loss this many positions at a time (gradients included), so that "
            "its float32 temporaries over the vocabulary are bounded by the chunk, not by batch x length: for "
            "language models with large vocabularies. Same loss and gradients. Default: in one piece. (A causal "
            "LM's forward KL from a top-k cache at T = 1 with the LM loss is one pass that keeps one buffer of the "
            "logits' size whatever the chunk: it does not need chunks.)"
        },
    )
    cross_tokenizer_loss: Literal["span", "uld"] = field(
        default="span",
        metadata={
            "help": "Causal LMs with a student of another tokenizer than the teacher's (docs/cross-tokenizer.md): how "
            "the soft-target (kd) term compares two vocabularies. 'span': span alignment in the manner of GOLD / "
            "MinED, predictions aligned by the text their tokens cover (the mass of merged spans combined), the "
            "tokens both vocabularies spell alike compared one to one and the rest by sorted probabilities; 'uld': "
            "Universal Logit Distillation (Boizard et al. 2024), the k-th predicted token of each side compared by "
            "sorted probabilities over the union vocabulary. Both at the temperature, not scaled by T^2."
        },
    )
    fused_linear_loss: Literal["auto", "always", "never"] = field(
        default="auto",
        metadata={
            "help": "Causal LMs: compute the kd and label terms from the student's final hidden states and output "
            "layer, loss_chunk_size positions at a time (default: about 2^26 logits a chunk), so that no logits over "
            "the vocabulary are made in a training step (and, with one live teacher, none of the teacher's: its "
            "hidden states and output layer too). Same values and gradients. 'auto' (default): wherever the run "
            "allows it (no logit_mse, no padded vocabulary, no sharded student, a plain linear output layer; the "
            "reason is logged otherwise); 'always': the same, and a run that does not allow it is refused at "
            "start-up; 'never': from the logits. Evaluation reads the logits.",
            "choices": ["auto", "always", "never"],
        },
    )
    lmbda: float = field(
        default=0.0,
        metadata={
            "help": "Causal LMs, on-policy distillation (GKD, Agarwal et al. 2024; TRL's name): the fraction of "
            "training batches, in [0, 1], whose prompts the student completes itself (max_new_tokens, "
            "generation_temperature, top_p) and whose completions the teacher scores; the loss counts the generated "
            "tokens only. The prompt is the part of an example before its first label (prompt/completion data), or "
            "its first prompt_length tokens (plain text). Drawn batch by batch from the seed. Needs a live teacher."
        },
    )
    seq_kd: bool = field(
        default=False,
        metadata={
            "help": "Causal LMs, sequence-level distillation (Kim & Rush 2016): the teacher completes the prompts of "
            "the batches the student does not (all of them with lmbda=0), and the student learns on the teacher's "
            "sequences. Needs a live teacher."
        },
    )
    max_new_tokens: int = field(
        default=32, metadata={"help": "With lmbda or seq_kd: the most tokens generated per completion."}
    )
    generation_temperature: float = field(
        default=1.0,
        metadata={
            "help": "With lmbda or seq_kd: the sampling temperature of the completions (>= 0; 0 is greedy "
            "decoding). Not the distillation's `temperature`."
        },
    )
    top_p: float = field(
        default=1.0, metadata={"help": "With lmbda or seq_kd: nucleus sampling of the completions, in (0, 1]."}
    )
    prompt_length: int = field(
        default=16,
        metadata={
            "help": "With lmbda or seq_kd, for plain-text examples (every token a target): the number of first "
            "tokens that form the prompt to complete."
        },
    )
    hidden_loss_type: Literal["mse", "cosine"] = field(
        default="mse",
        metadata={"help": "Hidden-state loss: 'mse' (FitNets, TinyBERT) or 'cosine' (1 - cosine, as DistilBERT)."},
    )
    attention_loss_type: Literal["kl", "mse"] = field(
        default="kl",
        metadata={"help": "Attention loss: 'kl' (KL between attention distributions) or 'mse'."},
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
    relation_types: list[str] | str = field(
        default_factory=lambda: list(_RELATION_TYPES),
        metadata={
            "help": "Which relations the relation loss averages: any of query, key, value (a list, or "
            "comma-separated). Read as a list."
        },
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
            f"a strategy ({', '.join(LAYER_STRATEGIES)}) or explicit teacher:student pairs such as "
            "'2:1,4:2,6:3', numbered as hidden_states are (0 is the embedding output). In Python or YAML a list of "
            "[teacher, student] pairs is accepted too."
        },
    )
    # transformers' field, with the default distillation wants: a distillation step runs the teacher AND the
    # student, so the padding that random batches carry costs twice. Measured on an 8,000-tweet job (KD + hidden MSE,
    # 2 epochs, batch 32, CPU): random batches 544 s, group_by_length 314 s, test accuracy 0.7605 vs 0.7625.
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={
            "help": "Sampler for training batches: 'group_by_length' (default for distillation) puts examples of "
            "similar length together (shuffled in groups), so batches carry little padding: a distillation step runs "
            "both teacher and student on every padded position (on an 8,000-tweet job 314 s instead of 544 s with "
            "'random', at the same accuracy). 'random' draws batches uniformly (transformers' default); "
            "'sequential' keeps the data's order; 'batch_rebalance' balances padded tokens across devices.",
            "choices": ["random", "sequential", "group_by_length", "batch_rebalance"],
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Write into an output_dir that already holds files this tool did not write (another model, other "
            "files), which may be overwritten. Without it such a folder is refused at start-up. A teacher's folder "
            "is refused even with it."
        },
    )
    hub_strategy: str = field(
        default="end",
        metadata={
            "help": "With push_to_hub: what is pushed and when. 'end' (the default here): one commit of the final "
            "student, its card and metrics. 'every_save', 'checkpoint' and 'all_checkpoints' also push during "
            "training, i.e. half-trained weights at each save."
        },
    )
    # The teachers named by teacher_model_name_or_path, read once (not a flag).
    teacher_paths: list[str] = field(init=False, default_factory=list, repr=False)

    def __post_init__(self):
        # JSON strings are checked here so that a typo is named; TrainingArguments then parses them into dicts.
        for name in ("peft_config", "teacher_model_init_kwargs"):
            _check_json_dict(getattr(self, name), name)
        super().__post_init__()
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}; try 1.0 to 4.0 (DistilBERT used 2.0)")
        for term in TERMS.values():
            weight = getattr(self, term.weight_field)
            if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
                raise ValueError(f"{term.weight_field} must be a finite number >= 0, got {weight!r}")
        if not any(self.loss_weights.values()):
            fields = ", ".join(term.weight_field for term in TERMS.values())
            raise ValueError(
                f"all loss weights are 0 ({fields}): set at least one above 0, e.g. kd_weight=0.5 and label_weight=0.5"
            )
        for field_name, low, high, high_included in (
            ("divergence_beta", 0.0, 1.0, True),
            ("divergence_alpha", 0.0, 1.0, False),
        ):
            value = getattr(self, field_name)
            inside = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not inside or not (low <= value <= high if high_included else low <= value < high):
                interval = f"[{low:g}, {high:g}{']' if high_included else ')'}"
                raise ValueError(f"{field_name} must be a number in {interval}, got {value!r}")
        if self.loss_chunk_size is not None and (
            isinstance(self.loss_chunk_size, bool)
            or not isinstance(self.loss_chunk_size, int)
            or self.loss_chunk_size < 1
        ):
            raise ValueError(
                f"loss_chunk_size must be a whole number of positions >= 1 (e.g. 1024), or unset, got "
                f"{self.loss_chunk_size!r}"
            )
        self._check_generation_settings()
        self._check_teacher_sources()
        for field_name, choices in (
            ("divergence", tuple(DIVERGENCES)),
            ("cross_tokenizer_loss", ("span", "uld")),
            ("hidden_loss_type", ("mse", "cosine")),
            ("attention_loss_type", ("kl", "mse")),
            ("teacher_dtype", ("auto", "float32", "bfloat16", "float16")),
            ("fused_linear_loss", ("auto", "always", "never")),
            ("teacher_engine", ("pytorch", "onnxruntime", "onnxruntime-int8")),
        ):
            if getattr(self, field_name) not in choices:
                raise ValueError(f"{field_name} must be one of {choices}, got {getattr(self, field_name)!r}")
        if not (isinstance(self.layer_map, str) and self.layer_map in LAYER_MAP_STRATEGIES):
            # Explicit pairs: check their form now; their range is checked against the models by the trainer.
            pairs = parse_layer_pairs(self.layer_map)
            self.layer_map = ",".join(f"{t}:{s}" for t, s in pairs)
        self._parse_teachers()
        if not isinstance(self.intermediate_teacher, int) or self.intermediate_teacher < 0:
            raise ValueError(f"intermediate_teacher must be a teacher index >= 0, got {self.intermediate_teacher!r}")
        relations = _split(self.relation_types)
        if not relations or any(r not in _RELATION_TYPES for r in relations):
            raise ValueError(
                f"relation_types must be a comma-separated subset of query, key, value, got {self.relation_types!r}"
            )
        self.relation_types = relations
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
        for name in ("peft_config", "teacher_model_init_kwargs"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a dict or a JSON object string, got {getattr(self, name)!r}")

    def _check_generation_settings(self) -> None:
        """The on-policy / sequence-level fields: ranges, and no teacher cache (it cannot score new sequences)."""
        for field_name, low, high, low_included in (
            ("lmbda", 0.0, 1.0, True),
            ("top_p", 0.0, 1.0, False),
            ("generation_temperature", 0.0, math.inf, True),
        ):
            value = getattr(self, field_name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
            if not number or not (low <= value if low_included else low < value) or not value <= high:
                interval = f"in {'[' if low_included else '('}{low:g}, {high:g}]" if high < math.inf else f">= {low:g}"
                raise ValueError(f"{field_name} must be a number {interval}, got {value!r}")
        for field_name in ("max_new_tokens", "prompt_length"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field_name} must be a whole number >= 1, got {value!r}")
        check_completion_settings(self, self.teacher_cache)

    def _check_teacher_sources(self) -> None:
        """The teacher engine's and the teacher server's settings: a plain http(s) address (no credentials in it),
        one teacher source, numbers in range."""
        apis = ("vllm", "llama.cpp", "openai-echo")
        if self.teacher_server_api not in apis:
            raise ValueError(f"teacher_server_api must be one of {apis}, got {self.teacher_server_api!r}")
        for name, low in (
            ("teacher_server_top_k", 1),
            ("teacher_server_retries", 0),
            ("teacher_server_concurrency", 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
        max_kl = self.teacher_engine_max_kl
        if not isinstance(max_kl, (int, float)) or isinstance(max_kl, bool) or not 0 <= max_kl < math.inf:
            raise ValueError(f"teacher_engine_max_kl must be a number >= 0, got {max_kl!r}")
        timeout = self.teacher_server_timeout
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout < math.inf:
            raise ValueError(f"teacher_server_timeout must be a number of seconds > 0, got {timeout!r}")
        if self.teacher_server_url is not None:
            self.teacher_server_url = check_server_url(self.teacher_server_url)
            if self.teacher_cache or self.teacher_model_name_or_path:
                given = "teacher_cache" if self.teacher_cache else "teacher_model_name_or_path"
                raise ValueError(f"teacher_server_url is the teacher, and {given} is given too: keep one of them")

    def _parse_teachers(self) -> None:
        """Reads the teacher list and its weights once: `teacher_paths` and `teacher_weights` become lists."""
        paths = self.teacher_model_name_or_path
        if isinstance(paths, (list, tuple)):
            self.teacher_model_name_or_path = ",".join(str(p).strip() for p in paths)
        self.teacher_paths = _split(self.teacher_model_name_or_path)
        if self.teacher_weights is None:
            return
        given = self.teacher_weights
        try:
            weights = [float(w) for w in _split(given)]
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"teacher_weights must be comma-separated numbers such as '0.7,0.3' (or a list), got {given!r}"
            ) from error
        if any(w < 0 or not math.isfinite(w) for w in weights) or not sum(weights) > 0:
            raise ValueError(f"teacher_weights must be numbers >= 0 with a positive sum, got {given!r}")
        if self.teacher_paths and len(self.teacher_paths) != len(weights):
            raise ValueError(
                f"teacher_weights has {len(weights)} weights but teacher_model_name_or_path names "
                f"{len(self.teacher_paths)} teachers ({self.teacher_model_name_or_path!r}): give one weight per "
                "teacher"
            )
        self.teacher_weights = weights

    def distillation_settings(self) -> dict[str, float | str]:
        """The settings that define the distillation (for the metrics file and the model card): JSON-serialisable,
        each term's weight under its weight field's name."""
        settings = {
            "temperature": self.temperature,
            "divergence": self.divergence,
            **{term.weight_field: float(getattr(self, term.weight_field)) for term in TERMS.values()},
            "hidden_loss_type": self.hidden_loss_type,
            "attention_loss_type": self.attention_loss_type,
        }
        # A mixing weight only with the divergence that uses it.
        if self.divergence == "jsd":
            settings["divergence_beta"] = float(self.divergence_beta)
        elif self.divergence == "skew_kl":
            settings["divergence_alpha"] = float(self.divergence_alpha)
        if uses_completions(self):  # on-policy / sequence-level: which batches were generated, and how
            settings["completions"] = {
                name: getattr(self, name)
                for name in ("lmbda", "seq_kd", "max_new_tokens", "generation_temperature", "top_p", "prompt_length")
            }
        # Only when a loss compares layers: an unused layer map describes nothing that happened.
        if needs_of(active_terms(self)) & {"hidden_states", "attentions"}:
            settings["layer_map"] = self.layer_map
        if self.relation_weight:
            settings.update(relation_layers=self.relation_layers, relation_types=",".join(self.relation_types))
        if len(self.teacher_paths) > 1:
            weights = self.teacher_weights
            # Hub ids as they are, local folders by their base name (a published file must not reveal the user's
            # file system).
            settings.update(
                teachers=",".join(teacher_reference(path) for path in self.teacher_paths),
                teacher_weights=None if weights is None else ",".join(f"{w:g}" for w in weights),
            )
        if self.peft_config:
            settings["peft"] = {**self.peft_config, "saved": "merged" if self.merge_adapter_on_save else "adapter"}
        return settings

    @property
    def loss_weights(self) -> dict[str, float]:
        """The weight of each loss term, by term name (`label`, `kd`, `logit_mse`, `hidden`, ...)."""
        return {term.name: float(getattr(self, term.weight_field)) for term in TERMS.values()}


def _split(value: Any) -> list[str]:
    """A list from a list, or from a comma-separated string (items stripped, empty ones dropped)."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _check_json_dict(value: Any, name: str) -> None:
    if not isinstance(value, str):
        return
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(
            f'{name} is not valid JSON ({error}): {value!r}; expected e.g. \'{{"dtype": "bfloat16"}}\''
        ) from error
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a dict or a JSON object string, got {value!r}")
