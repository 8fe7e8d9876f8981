"""Exports of a distilled student for CPU inference: int8 PyTorch, ONNX float, ONNX int8.

- `int8`: PyTorch dynamic quantisation of every `nn.Linear` (`torch.ao.quantization.quantize_dynamic`, weights int8
  with one scale per output channel, activations quantised on the fly). Saved as the config and the quantised state
  dict (`model_int8.pt`); load with [`load_int8`]. PyTorch has deprecated `torch.ao.quantization` in favour of
  torchao, so this export may go away with a future torch; the ONNX ones do not depend on it.
- `onnx`: the model's logits as an ONNX graph (`model.onnx`), traced by `torch.onnx.export` (TorchScript exporter:
  optimum's exporter pins transformers 4.x, and the dynamo exporter needs onnxscript), with dynamic batch and
  sequence axes, run by onnxruntime; load with [`load_onnx`].
- `onnx-int8`: the same graph with int8 weights (one scale per channel), by onnxruntime's dynamic quantisation
  (`onnxruntime.quantization.quantize_dynamic`).

The ONNX exports need the `export` extra: `pip install 'hf-distill[export]'` (onnx and onnxruntime, about 110 MB).
Every loaded variant is called like a transformers model, `model(**tokenizer(texts, return_tensors="pt"))`, and
returns an output with `.logits`, so one evaluation serves them all ([`~hf_distill.compress`]).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from transformers import PreTrainedModel

from .architectures import ARCHITECTURES, input_names
from .log import get_logger
from .output_folders import staged_folder

__all__ = [
    "EXPORT_FORMATS",
    "INT8_FILE",
    "ONNX_FILE",
    "OnnxModel",
    "export_onnx",
    "load_int8",
    "load_onnx",
    "quantize_int8",
    "quantize_onnx",
    "require_export_extra",
    "save_int8",
]

logger = get_logger(__name__)

EXPORT_FORMATS = ("int8", "onnx", "onnx-int8")
INT8_FILE = "model_int8.pt"
ONNX_FILE = "model.onnx"
EXPORT_EXTRA = "pip install 'hf-distill[export]'"
# The inputs an exported graph may take, in this order, when the model's forward names them.
_ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def require_export_extra(what: str = "an ONNX export") -> None:
    """Raises an `ImportError` naming the extra to install when onnx or onnxruntime is missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"{what} needs {' and '.join(missing)}, which are not installed: {EXPORT_EXTRA}")


# ---- int8 PyTorch ---------------------------------------------------------------------------------------------------


def quantize_int8(model: PreTrainedModel) -> PreTrainedModel:
    """A copy of `model` (in eval mode, on the CPU) whose `nn.Linear` layers are dynamically quantised to int8."""
    model = copy.deepcopy(model).to("cpu").eval()
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices, once per call
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # One scale per output row: on the tweets student, per-tensor scales flipped 4.1% of the predictions (agreement
        # 95.9%), per-channel ones 2.0% (98.05%), at the same speed.
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def save_int8(model: PreTrainedModel, folder: str | os.PathLike, overwrite: bool = False) -> str:
    """Saves a model quantised by [`quantize_int8`]: its config (with `distillation_export`, and its own class as
    `architectures`, which [`load_int8`] rebuilds) and state dict.

    The files are written into a staging folder and moved into `folder` once complete: a failure leaves nothing
    behind. A `folder` that already holds `config.json` or `model_int8.pt` is refused unless `overwrite`.
    """

    config = _config_naming(model, "int8")
    with staged_folder(folder, replace=overwrite, what="the int8 export folder") as stage:
        config.save_pretrained(stage)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.save(model.state_dict(), stage / INT8_FILE)
    return os.path.join(folder, INT8_FILE)


def _config_naming(model: PreTrainedModel, export: str):
    """A copy of `model`'s config that names the export and the model's own class: a model never saved has no
    `architectures`, and one loaded from a checkpoint of another head (a classifier from `BertForMaskedLM`) names the
    checkpoint's class, which would rebuild the wrong model."""
    import transformers

    name = type(model).__name__
    if getattr(transformers, name, None) is not type(model):
        raise ValueError(
            f"the {export} export is rebuilt from a transformers class on loading, but {name} is not one: export the "
            "transformers model itself (for a peft model, merge_and_unload() first)"
        )
    config = copy.deepcopy(model.config)
    config.architectures = [name]
    config.distillation_export = export
    return config


def load_int8(folder: str | os.PathLike) -> PreTrainedModel:
    """Loads an int8 export: the float model built from the folder's config, quantised the same way, then given the
    saved int8 weights (`torch.load(..., weights_only=True)`: no code is unpickled)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    model_class = getattr(transformers, (config.architectures or [""])[0], None)
    if model_class is None:
        raise ValueError(f"{folder}/config.json names no transformers class in `architectures`: cannot rebuild it")
    model = model_class._from_config(config).eval()
    quantized = quantize_int8(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = torch.load(os.path.join(folder, INT8_FILE), weights_only=True)
    quantized.load_state_dict(state)
    return quantized


# ---- ONNX -----------------------------------------------------------------------------------------------------------


class _LogitsOnly(nn.Module):
    """The model with named tensor inputs and its logits as the only output (what the ONNX graph computes)."""

    def __init__(self, model: PreTrainedModel, names: tuple[str, ...]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors):
        extra = {"use_cache": False} if "use_cache" in _forward_names(self.model) else {}
        return self.model(**dict(zip(self.names, tensors)), **extra, return_dict=True).logits


def _forward_names(model: nn.Module) -> set[str]:
    return input_names(model)


def export_onnx(model: PreTrainedModel, folder: str | os.PathLike, opset: int = 17, overwrite: bool = False) -> str:
    """Exports the logits of `model` to `folder/model.onnx` (dynamic batch and sequence axes) and saves its config.

    The files are written into a staging folder and moved into `folder` once complete: a failure leaves nothing
    behind. A `folder` that already holds `config.json` or `model.onnx` is refused unless `overwrite`.

    Returns:
        `str`: the path of the ONNX file.
    """

    require_export_extra("exporting to ONNX")
    config = _config_naming(model, "onnx")
    model = copy.deepcopy(model).to("cpu").eval()
    names = _onnx_input_names(model)
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["logits"] = {0: "batch"} if _per_example(model) else {0: "batch", 1: "sequence"}
    with staged_folder(folder, replace=overwrite, what="the ONNX export folder") as stage:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's tracer warnings about Python control flow
            torch.onnx.export(
                _LogitsOnly(model, names),
                example,
                str(stage / ONNX_FILE),
                input_names=list(names),
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
        config.save_pretrained(stage)
    return os.path.join(folder, ONNX_FILE)


def fuse_onnx(path: str | os.PathLike, config) -> dict[str, int]:
    """Rewrites the ONNX model at `path` with onnxruntime's transformer optimizer where it knows the model's family
    ([`~hf_distill.architectures.Architecture.onnx_fusion`]): attention, embedding and residual layer norms and GELU
    become onnxruntime's fused CPU kernels. The graph's inputs and outputs are unchanged.

    The attention is fused only from the graph of transformers' eager attention (export a model set to
    `attn_implementation="eager"`); the optimizer leaves what it does not recognise as it is.

    Returns:
        `dict[str, int]`: how many operators of each kind were fused (empty when the family has no fusions).
    """
    require_export_extra("fusing an ONNX graph")
    family = ARCHITECTURES.get(getattr(config, "model_type", None))
    if family is None or family.onnx_fusion is None:
        return {}
    from onnxruntime.transformers.optimizer import optimize_model

    with _root_logger_at(logging.ERROR):  # the optimizer logs each fusion pass on the root logger
        optimized = optimize_model(
            str(path),
            model_type=family.onnx_fusion,
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
        )
        optimized.save_model_to_file(str(path))
    return {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}


@contextlib.contextmanager
def _root_logger_at(level: int):
    """The root logger at `level` inside the block (onnxruntime's tools log their advice and progress on it)."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(before)


def _onnx_input_names(model: PreTrainedModel) -> tuple[str, ...]:
    """The inputs of the graph: those of `input_ids`, `attention_mask`, `token_type_ids` that the model's forward
    takes. `token_type_ids` only with a token-type embedding (`type_vocab_size` > 0): GPT-2's forward takes them but,
    given them, adds the word embedding of id 0 to every position, so the zeros the graph would be fed in their place
    would change its logits."""
    names = _forward_names(model)
    types = getattr(model.config, "type_vocab_size", 0)
    return tuple(
        name
        for name in _ONNX_INPUTS
        if name in names and (name != "token_type_ids" or (isinstance(types, int) and types > 0))
    )


def _per_example(model: PreTrainedModel) -> bool:
    """Whether the logits have one row per example (sequence classification) rather than one per token."""
    with torch.no_grad():
        names = _onnx_input_names(model)
        out = _LogitsOnly(model, names)(*(torch.ones(1, 3, dtype=torch.long) for _ in names))
    return out.dim() == 2


def quantize_onnx(source: str | os.PathLike, folder: str | os.PathLike, overwrite: bool = False) -> str:
    """Writes `folder/model.onnx`: the ONNX model at `source` (a file or a folder holding `model.onnx`) with int8
    weights (onnxruntime dynamic quantisation), and copies the source folder's config.

    The files are written into a staging folder and moved into `folder` once complete: a failure leaves nothing
    behind. A `folder` that already holds `config.json` or `model.onnx` is refused unless `overwrite`.
    """

    require_export_extra("quantising an ONNX model")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = Path(source)
    source_file = source / ONNX_FILE if source.is_dir() else source
    if not source_file.is_file():
        raise FileNotFoundError(f"no ONNX model at {str(source_file)!r}: give a model.onnx file or its folder")
    with staged_folder(folder, replace=overwrite, what="the ONNX int8 export folder") as stage:
        with _root_logger_at(logging.ERROR):  # onnxruntime's advice to pre-process, logged at every call
            quantize_dynamic(
                str(source_file),
                str(stage / ONNX_FILE),
                weight_type=QuantType.QInt8,
                per_channel=True,
                # onnxruntime's fused operators (`fuse_onnx`) carry no type the quantiser's shape inference can read
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        config_path = source_file.parent / "config.json"
        if config_path.is_file():
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(source_file.parent)
            config.distillation_export = "onnx-int8"
            config.save_pretrained(stage)
    return os.path.join(folder, ONNX_FILE)


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session of the ONNX file at `path`, with every graph optimisation and `threads` intra-op
    threads (default: torch's).

    onnxruntime's threads busy-wait for more work after each run by default; here they do not: on a CPU shared with
    other work (the latency measurement's rounds, a student training between the teacher's passes) they would slow
    down whatever runs next."""
    require_export_extra("running an ONNX model")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An ONNX export run by onnxruntime, called like a transformers model: `model(**inputs).logits` (torch tensors
    in, a torch tensor out).

    Args:
        path (`str`): the `.onnx` file or a folder holding `model.onnx` (and its `config.json`).
        threads (`int`, *optional*): onnxruntime's intra-op threads (default: torch's thread count, so that
            latencies compare with PyTorch's on the same cores).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        path = Path(path)
        self.path = path / ONNX_FILE if path.is_dir() else path
        self.session = onnx_session(self.path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.config = None
        if (self.path.parent / "config.json").is_file():
            from transformers import AutoConfig

            self.config = AutoConfig.from_pretrained(self.path.parent)
        self.device = torch.device("cpu")

    def __call__(self, **inputs) -> SimpleNamespace:
        feed = {}
        for name in self.input_names:
            value = inputs.get(name)
            if value is None and name == "token_type_ids":
                value = torch.zeros_like(inputs["input_ids"])
            if value is None:
                raise ValueError(f"the ONNX model {self.path} needs the input {name!r}")
            feed[name] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        (logits,) = self.session.run(["logits"], feed)
        return SimpleNamespace(logits=torch.from_numpy(logits))

    def eval(self) -> OnnxModel:
        return self


def load_onnx(folder: str | os.PathLike, threads: int | None = None) -> OnnxModel:
    """Loads an `onnx` or `onnx-int8` export folder (see [`OnnxModel`])."""
    return OnnxModel(folder, threads)
