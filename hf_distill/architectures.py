"""What hf_distill knows about each model family, in one table: where the layers are and where their q/k/v are.

The student builder copies blocks of the layer stack, the relation capture hooks the query/key/value projections of
one block, and both find them here. Only families whose layers are independent, identically shaped blocks are listed:
anything else could silently produce a broken student. [`unwrap`] is the one way to reach the transformers model
inside the wrappers training puts around it (PEFT, `torch.compile`, DDP / Accelerate).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from torch import nn

__all__ = [
    "ARCHITECTURES",
    "REJECTED_MODEL_TYPES",
    "SUPPORTED_MODEL_TYPES",
    "Architecture",
    "architecture",
    "layer_stack",
    "layer_stack_path",
    "input_names",
    "qkv_paths",
    "unwrap",
]


@dataclass(frozen=True)
class Architecture:
    """
    Where one model family keeps its layers and their attention projections.

    Attributes:
        layers (`str`): Dotted path of the layer `nn.ModuleList`, relative to the base model (`model.base_model`).
        qkv (`tuple[str, ...]`): The query, key and value projections, relative to one layer; or a single path, a
            fused projection whose output is `[query | key | value]` along its last dimension in three equal parts
            (GPT-2's `Conv1D`, split with `split(embed_dim, dim=2)`).
        widths (`tuple[tuple[str, tuple[str, ...]], ...]`): For width pruning ([`~hf_distill.prune`]): each module of
            one layer whose weights have a prunable dimension, with the role of each dimension: `(out, in)` for a
            linear layer (`weight` is `(out, in)`, `bias` is `(out,)`), `(role,)` for a norm. Roles: `"hidden"` (the
            residual stream's channels), `"heads"` (query heads' channels), `"kv"` (key and value heads' channels),
            `"ffn"` (the feed-forward neurons). Empty: the family cannot be pruned in width.
        head_dim_key (`str`, *optional*): The config attribute holding the head size when the family has one
            (Llama's `head_dim`); `None` when the head size is `hidden_size / num_attention_heads` (BERT), so that
            a width-pruned student must keep `hidden_size == num_attention_heads * head_size`.
        kv_heads_key (`str`, *optional*): The config attribute holding the number of key/value heads (grouped-query
            attention), or `None` when keys and values have as many heads as queries.
        onnx_fusion (`str`, *optional*): The model type under which onnxruntime's transformer optimizer fuses this
            family's exported graph (attention, embedding and residual layer norms, GELU) into its fused CPU
            kernels; `None` where it has no fusions for the family (the graph then runs as exported).
    """

    layers: str
    qkv: tuple[str, ...]
    widths: tuple[tuple[str, tuple[str, ...]], ...] = ()
    head_dim_key: str | None = None
    kv_heads_key: str | None = None
    onnx_fusion: str | None = None

    def __post_init__(self):
        if len(self.qkv) not in (1, 3):
            raise ValueError(f"qkv names three projections or one fused projection, got {self.qkv!r}")


_BERT_LIKE = Architecture(
    "encoder.layer",
    ("attention.self.query", "attention.self.key", "attention.self.value"),
    widths=(
        ("attention.self.query", ("heads", "hidden")),
        ("attention.self.key", ("kv", "hidden")),
        ("attention.self.value", ("kv", "hidden")),
        ("attention.output.dense", ("hidden", "heads")),
        ("attention.output.LayerNorm", ("hidden",)),
        ("intermediate.dense", ("ffn", "hidden")),
        ("output.dense", ("hidden", "ffn")),
        ("output.LayerNorm", ("hidden",)),
    ),
    onnx_fusion="bert",
)
_LLAMA_LIKE = Architecture(
    "layers",
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    widths=(
        ("self_attn.q_proj", ("heads", "hidden")),
        ("self_attn.k_proj", ("kv", "hidden")),
        ("self_attn.v_proj", ("kv", "hidden")),
        ("self_attn.o_proj", ("hidden", "heads")),
        ("input_layernorm", ("hidden",)),
        ("mlp.gate_proj", ("ffn", "hidden")),
        ("mlp.up_proj", ("ffn", "hidden")),
        ("mlp.down_proj", ("hidden", "ffn")),
        ("post_attention_layernorm", ("hidden",)),
    ),
    head_dim_key="head_dim",
    kv_heads_key="num_key_value_heads",
)

ARCHITECTURES: dict[str, Architecture] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "mpnet": Architecture("encoder.layer", ("attention.attn.q", "attention.attn.k", "attention.attn.v")),
    "deberta-v2": Architecture(
        "encoder.layer", ("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj")
    ),
    "distilbert": Architecture(
        "transformer.layer", ("attention.q_lin", "attention.k_lin", "attention.v_lin"), onnx_fusion="bert"
    ),
    "gpt2": Architecture("h", ("attn.c_attn",)),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
}
SUPPORTED_MODEL_TYPES = tuple(sorted(ARCHITECTURES))

# Families we know about but deliberately refuse, with the reason.
REJECTED_MODEL_TYPES: dict[str, str] = {
    "albert": "ALBERT shares one set of layer weights across all its layers, so there are no per-layer weights to "
    "select from (and hooks on one layer's projections would fire for every layer); shrink `num_hidden_layers` in "
    "the config instead",
}


def unwrap(model: nn.Module) -> nn.Module:
    """
    The transformers model inside the wrappers that training puts around it.

    Peels, in any order and any number of times: a PEFT model (`get_base_model()`), `torch.compile`'s
    `OptimizedModule` (`_orig_mod`) and `DistributedDataParallel` or Accelerate wrappers (`module`, on a wrapper that
    has no `config` of its own). Anything else is returned as it is.
    """
    while True:
        if callable(getattr(model, "get_base_model", None)):
            model = model.get_base_model()
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif getattr(model, "config", None) is None and isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


def input_names(model: nn.Module) -> set[str]:
    """
    The inputs that the model's `forward` names (a DistilBERT model takes no token_type_ids, a BERT model does).

    Read from the transformers model inside any wrapper (see [`~hf_distill.architectures.unwrap`]): a PEFT model, a
    `torch.compile`d module and a DDP wrapper all take `(*args, **kwargs)` and pass them on, so their own signature
    names nothing (and a teacher given no inputs fails with "You must specify exactly one of input_ids or
    inputs_embeds").
    """
    return {
        name
        for name, p in inspect.signature(unwrap(model).forward).parameters.items()
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }


def architecture(model: nn.Module | str, purpose: str = "distil") -> Architecture:
    """
    The table entry of a model (unwrapped first) or of a `model_type`.

    Args:
        model (`nn.Module` or `str`): A transformers model, possibly wrapped (see [`unwrap`]), or its `model_type`.
        purpose (`str`, *optional*): What the caller wants to do, for the error message ("build a student from", ...).

    Raises:
        `ValueError`: naming the model type, why it is refused if it is known to be unsuitable, and the supported ones.
    """
    if isinstance(model, str):
        model_type, name = model, f"model_type {model!r}"
    else:
        model = unwrap(model)
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        name = f"{type(model).__name__} (model_type {model_type!r})"
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    reason = REJECTED_MODEL_TYPES.get(model_type, "hf_distill does not know where its layers are")
    raise ValueError(f"Cannot {purpose} {name}: {reason}; supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}.")


def qkv_paths(model_type: str) -> tuple[str, ...]:
    """The query, key and value projection paths of one layer of `model_type` (one path: a fused projection)."""
    return architecture(model_type, "find the query, key and value projections of").qkv


def layer_stack(model: nn.Module, purpose: str = "find the layers of") -> nn.ModuleList:
    """
    The `nn.ModuleList` of transformer layers of `model` (a task model or a base model, possibly wrapped).

    Raises:
        `ValueError`: for a model type not in the table (see [`architecture`]).
        `RuntimeError`: when the model has no layer list where its family keeps it.
    """
    arch = architecture(model, purpose)
    model = unwrap(model)
    base = getattr(model, "base_model", model)
    try:
        layers = base.get_submodule(arch.layers)
    except AttributeError:
        layers = None
    if not isinstance(layers, nn.ModuleList):
        raise RuntimeError(
            f"{type(base).__name__} has no layer list at {arch.layers!r}, as a {model.config.model_type} should."
        )
    return layers


def layer_stack_path(model: nn.Module, purpose: str = "find the layers of") -> str:
    """
    Dotted path of the layer list from `model` itself, which is also its state-dict prefix: e.g. `bert.encoder.layer`
    for `BertForSequenceClassification`, `encoder.layer` for `BertModel`.
    """
    stack = layer_stack(model, purpose)
    return next(name for name, module in model.named_modules() if module is stack)
