"""Query, key and value projections of one transformer layer, recorded during the model's normal forward pass.

Self-attention relation distillation (MiniLM, Wang et al. 2020; MiniLMv2, Wang et al. 2021) compares relations built
from a layer's queries, keys and values (see [`~hf_distill.losses.attention_relation_loss`]). These are the outputs of
plain linear projections, so forward hooks can read them whatever the attention implementation: with the default
`sdpa` (or flash attention) the model never materialises attention probabilities, and `output_attentions=True` would
force the slower eager path.

Layers are numbered like `output_hidden_states`: layer `l` (1 to `num_hidden_layers`) reads `hidden_states[l - 1]` and
writes `hidden_states[l]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .architectures import SUPPORTED_MODEL_TYPES, layer_stack, qkv_paths, unwrap
from .losses import attention_relation_loss

__all__ = [
    "RELATIONS",
    "SUPPORTED_MODEL_TYPES",
    "QKVCapture",
    "QKVProjections",
    "qkv_projections",
    "relation_loss_terms",
]

RELATIONS = ("query", "key", "value")


@dataclass(frozen=True)
class QKVProjections:
    """
    The modules that compute one layer's queries, keys and values: either three separate projections or one fused.

    Attributes:
        block (`nn.Module`): The transformer layer they belong to.
        query (`nn.Module`, *optional*): The query projection (`nn.Linear`, or a PEFT layer wrapping one).
        key (`nn.Module`, *optional*): The key projection; narrower than `query` under grouped-query attention.
        value (`nn.Module`, *optional*): The value projection.
        fused (`nn.Module`, *optional*): One projection whose output is `[query | key | value]` along its last
            dimension, in three equal parts (GPT-2's `attn.c_attn`). Set instead of `query`, `key` and `value`.
    """

    block: nn.Module
    query: nn.Module | None = None
    key: nn.Module | None = None
    value: nn.Module | None = None
    fused: nn.Module | None = None

    def __post_init__(self):
        separate = (self.query, self.key, self.value)
        if self.fused is not None:
            valid = all(module is None for module in separate)
        else:
            valid = all(module is not None for module in separate)
        if not valid:
            raise ValueError("QKVProjections needs either all of query, key and value, or only fused.")

    @property
    def modules(self) -> dict[str, nn.Module]:
        """The projection modules by name: `{"fused": ...}` or `{"query": ..., "key": ..., "value": ...}`."""
        if self.fused is not None:
            return {"fused": self.fused}
        return {"query": self.query, "key": self.key, "value": self.value}

    @property
    def widths(self) -> dict[str, int]:
        """
        The output width of each projection, `{"query", "key", "value"}` to `num_heads * head_dim` (keys and values:
        `num_key_value_heads * head_dim` under grouped-query attention); a fused projection's width split in three.
        """
        if self.fused is not None:
            return dict.fromkeys(RELATIONS, _out_features(self.fused) // 3)
        return {name: _out_features(module) for name, module in self.modules.items()}


def _out_features(module: nn.Module) -> int:
    # nn.Linear and PEFT layers have `out_features`; GPT-2's Conv1D has `nf`.
    width = getattr(module, "out_features", None) or getattr(module, "nf", None)
    if not isinstance(width, int):
        raise TypeError(f"Cannot tell the output width of the projection {type(module).__name__}.")
    return width


def qkv_projections(model: nn.Module, layer: int) -> QKVProjections:
    """
    Find the query, key and value projections of one transformer layer.

    Args:
        model (`nn.Module`): A transformers model of a supported type: a task model (`BertForSequenceClassification`,
            `LlamaForCausalLM`, ...) or a base model, possibly inside a PEFT `PeftModel`, `torch.compile` or
            `DistributedDataParallel`.
        layer (`int`): The transformer layer, numbered like `output_hidden_states`: 1 is the first layer,
            `num_hidden_layers` the last.

    Returns:
        [`QKVProjections`]: The modules, as they sit in `model` (hooks on them see its forward passes).
    """
    model = unwrap(model)
    purpose = "find the query, key and value projections of"
    layers = layer_stack(model, purpose)
    paths = qkv_paths(model.config.model_type)
    num_layers = len(layers)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= num_layers:
        raise ValueError(
            f"layer={layer!r} is out of range: {type(model).__name__} has {num_layers} transformer layers, numbered "
            f"1..{num_layers} like output_hidden_states (hidden_states[0] is the embeddings)."
        )
    block = layers[layer - 1]
    modules = [block.get_submodule(path) for path in paths]
    if len(modules) == 1:
        return QKVProjections(block=block, fused=modules[0])
    return QKVProjections(block, *modules)


class QKVCapture:
    r"""
    Records the query, key and value projections of one layer of a model on each of its forward passes.

    Forward hooks store the projection outputs as they are, in the autograd graph: a student's captured tensors carry
    gradients back to its projections (and everything before them), while a teacher run under `torch.no_grad()` gives
    tensors without a graph. As a context manager, around one step:

    ```python
    with QKVCapture(student, layer=2) as student_qkv, QKVCapture(teacher, layer=4) as teacher_qkv:
        outputs = student(**batch)
        with torch.no_grad():
            teacher(**batch)
    loss = relation_loss_terms(student_qkv.outputs, teacher_qkv.outputs, 4, mask=batch["attention_mask"])
    ```

    or attached for a whole training run, clearing each step so the tensors do not outlive it:

    ```python
    capture = QKVCapture(student, layer=2).attach()
    for batch in batches:
        student(**batch)
        loss = ...capture.outputs...
        capture.clear()
    capture.detach()
    ```

    What is recorded:

    - `outputs` holds the most recent forward pass of the layer: each pass replaces it. Leaving the `with` block (or
      `detach()`) removes the hooks but keeps the last outputs until `clear()`.
    - Only the first call of each projection within one forward pass of the layer counts. DeBERTa-v2 also applies its
      query and key projections to the relative position embeddings, after the hidden states; gradient checkpointing
      re-runs them during the backward pass. Both later calls are ignored. (Reentrant checkpointing,
      `use_reentrant=True`, runs the forward pass without a graph, so the captured student tensors have none: use
      the transformers default, `use_reentrant=False`.)
    - For Llama-style models (Llama, Mistral, Qwen2, Qwen3) `q_proj` and `k_proj` outputs come before the rotary
      position embedding (and before Qwen3's `q_norm` / `k_norm`): the projections themselves, which is what
      MiniLM-style relations compare. Under grouped-query attention the keys and values are narrower than the
      queries.

    Args:
        model (`nn.Module`): The model; see [`qkv_projections`].
        layer (`int`): The layer, 1 to `num_hidden_layers`, numbered like `output_hidden_states`.
    """

    def __init__(self, model: nn.Module, layer: int):
        self.layer = layer
        self.projections = qkv_projections(model, layer)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._outputs: dict[str, torch.Tensor] = {}
        self._pending: set[str] = set()

    @property
    def attached(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def attach(self) -> QKVCapture:
        """Registers the hooks; returns `self`. Attaching twice is an error (it would record every pass twice)."""
        if self._handles:
            raise RuntimeError(f"This QKVCapture of layer {self.layer} is already attached.")
        self._handles.append(self.projections.block.register_forward_pre_hook(self._start_pass))
        for name, module in self.projections.modules.items():
            self._handles.append(module.register_forward_hook(self._recorder(name)))
        return self

    def detach(self) -> None:
        """Removes the hooks (doing nothing if they are not registered); the last outputs stay until `clear()`."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._pending = set()

    # Same name as torch's `RemovableHandle.remove()`, for code that treats the capture as a hook handle.
    remove = detach

    def clear(self) -> None:
        """Drops the recorded tensors (and the graph they hold), e.g. after each training step."""
        self._outputs = {}

    @property
    def outputs(self) -> dict[str, torch.Tensor]:
        """
        The projections of the last forward pass: `{"query", "key", "value"}` to tensors of shape
        `(batch, seq_len, width)`, the width being all attention heads concatenated (`num_heads * head_dim`, or
        `num_key_value_heads * head_dim` for keys and values under grouped-query attention).
        """
        missing = [name for name in RELATIONS if name not in self._outputs]
        if len(missing) == len(RELATIONS):
            raise RuntimeError(
                f"No forward pass of layer {self.layer} has been recorded since the capture was created or cleared: "
                "attach it (or enter it with `with`) and run the model first."
            )
        if missing:
            raise RuntimeError(f"The last forward pass of layer {self.layer} did not reach the {missing} projections.")
        return dict(self._outputs)

    def _start_pass(self, module: nn.Module, args: tuple) -> None:
        self._outputs = {}
        self._pending = set(self.projections.modules)

    def _recorder(self, name: str):
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if name not in self._pending:
                return
            self._pending.discard(name)
            if name == "fused":
                self._outputs.update(zip(RELATIONS, output.split(output.shape[-1] // 3, dim=-1)))
            else:
                self._outputs[name] = output

        return record

    def __enter__(self) -> QKVCapture:
        return self.attach()

    def __exit__(self, *exc_info) -> None:
        self.detach()


def relation_loss_terms(
    student_qkv: Mapping[str, torch.Tensor],
    teacher_qkv: Mapping[str, torch.Tensor],
    num_relation_heads: int,
    mask: torch.Tensor | None = None,
    num_items: float | torch.Tensor | None = None,
    relations: Sequence[str] = RELATIONS,
) -> torch.Tensor:
    r"""
    MiniLMv2's self-attention relation loss for one student layer and one teacher layer (Wang et al., 2021).

    The mean over the chosen relations $\mathcal{R} \subseteq \{Q\text{-}Q, K\text{-}K, V\text{-}V\}$ of
    [`~hf_distill.losses.attention_relation_loss`]:

    $$\mathcal{L} = \frac{1}{|\mathcal{R}|} \sum_{x \in \mathcal{R}} \mathrm{attention\_relation\_loss}(x^s, x^t)$$

    `relations=("value",)` alone is MiniLM's value relation (Wang et al., 2020).

    Args:
        student_qkv (`Mapping[str, torch.Tensor]`): The student's projections, e.g. [`QKVCapture.outputs`].
        teacher_qkv (`Mapping[str, torch.Tensor]`): The teacher's projections, same batch and sequence length.
        num_relation_heads (`int`): Relation heads $R$; must divide every width involved (student and teacher; keys
            and values are narrower than queries under grouped-query attention).
        mask (`torch.Tensor` of shape `(batch, seq_len)`, *optional*): The attention mask (1 for real tokens).
        num_items (*optional*): Divisor of each relation's summed loss; defaults to the number of real tokens.
        relations (`Sequence[str]`, *optional*, defaults to `("query", "key", "value")`): Which relations to average.

    Returns:
        `torch.Tensor`: scalar float32 loss.
    """
    chosen = (relations,) if isinstance(relations, str) else tuple(relations)
    unknown = [name for name in chosen if name not in RELATIONS]
    if not chosen or unknown or len(set(chosen)) != len(chosen):
        raise ValueError(
            f"relations must be distinct names among {RELATIONS}, at least one; got {relations!r}"
            + (f" ({unknown} unknown)" if unknown else "")
        )
    for side, qkv in (("student_qkv", student_qkv), ("teacher_qkv", teacher_qkv)):
        absent = [name for name in chosen if name not in qkv]
        if absent:
            raise ValueError(f"{side} has no {absent} (it has {sorted(qkv)}).")
    terms = [
        attention_relation_loss(student_qkv[name], teacher_qkv[name], num_relation_heads, mask, num_items)
        for name in chosen
    ]
    return torch.stack(terms).mean()
