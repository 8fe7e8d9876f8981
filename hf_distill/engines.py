"""The teacher run by onnxruntime: an encoder teacher's forward passes (float or int8), for live distillation and the
teacher cache, with the agreement of its outputs with the PyTorch teacher's measured at start-up.

A teacher never needs gradients, yet on a CPU a distillation run spends about half its time in the teacher's PyTorch
forward passes (or in the cache build). [`run_teacher_on_onnxruntime`] exports the teacher with the project's own
exporter settings (`torch.onnx.export`, dynamic batch and sequence axes; int8 by onnxruntime's dynamic quantisation,
one scale per channel, as `hf_distill.export` does for students), with the hidden states the layer losses compare as
extra graph outputs, and replaces the teacher's `forward` with the onnxruntime session's. Everything else about the
teacher (its class and task, config, vocabulary, weights' fingerprint) stays the PyTorch model's, so the trainer and
the cache use it as before; the cache records the engine in its settings.

Before it is used, the engine's outputs are compared with the PyTorch teacher's on a sample of the training data:
the share of items (examples or tokens) whose most likely class agrees, the mean KL divergence from the PyTorch
teacher's distribution to the engine's at the distillation temperature, and the relative error of each hidden state.
The KL is what the student would learn wrong, so it is the tolerance: an engine whose KL passes `max_kl` (default
0.01 nats an item) is refused with one line. The top-1 agreement is reported, not enforced: where the teacher hesitates
between near-tied classes, int8 rounding flips its most likely one at no cost to the soft targets (a barely trained
MiniLM: 94% agreement at a KL of 1e-6). The figures go to the model card either way.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import types
import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ModelOutput

from .export import _ONNX_INPUTS, _forward_names, fuse_onnx, onnx_session, quantize_onnx, require_export_extra
from .log import get_logger
from .tasks import task_name_of

logger = get_logger(__name__)

TEACHER_ENGINES = ("pytorch", "onnxruntime", "onnxruntime-int8")
DEFAULT_MAX_KL = 0.01


class _TeacherGraph(nn.Module):
    """The teacher with named tensor inputs; outputs its logits, then the hidden states of `hidden_layers`."""

    def __init__(self, model: PreTrainedModel, names: tuple[str, ...], hidden_layers: Sequence[int]):
        super().__init__()
        self.model, self.names, self.hidden_layers = model, names, tuple(hidden_layers)

    def forward(self, *tensors):
        out = self.model(
            **dict(zip(self.names, tensors)), output_hidden_states=bool(self.hidden_layers), return_dict=True
        )
        return (out.logits, *(out.hidden_states[layer] for layer in self.hidden_layers))


def export_teacher_onnx(
    teacher: PreTrainedModel, folder: str, hidden_layers: Sequence[int] = (), int8: bool = False, opset: int = 17
) -> tuple[str, dict[str, int]]:
    """Writes `folder/model.onnx`: the teacher's logits and the hidden states of `hidden_layers` (numbered as
    `hidden_states`: 0 is the embedding output), dynamic batch and sequence axes, its operators fused for
    onnxruntime's CPU kernels where the family allows ([`~hf_distill.export.fuse_onnx`]: the teacher is exported with
    eager attention, whose graph the fusion recognises); with `int8`, its weights then quantised (onnxruntime dynamic
    quantisation, per channel). Returns the file's path and the counts of fused operators."""
    require_export_extra("running the teacher on onnxruntime")
    model = copy.deepcopy(teacher).to("cpu").float().eval()
    if callable(getattr(model, "set_attn_implementation", None)):
        model.set_attn_implementation("eager")
    names = tuple(name for name in _ONNX_INPUTS if name in _forward_names(model))
    layers = sorted(set(hidden_layers))
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    graph = _TeacherGraph(model, names, layers)
    with torch.no_grad():
        per_example = graph(*(torch.ones(1, 3, dtype=torch.long) for _ in names))[0].dim() == 2
    outputs = ["logits", *(f"hidden_states.{layer}" for layer in layers)]
    axes = {name: {0: "batch", 1: "sequence"} for name in (*names, *outputs[1:])}
    axes["logits"] = {0: "batch"} if per_example else {0: "batch", 1: "sequence"}
    float_folder = os.path.join(folder, "float") if int8 else folder
    os.makedirs(float_folder, exist_ok=True)
    path = os.path.join(float_folder, "model.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer warnings
        torch.onnx.export(
            graph, example, path, input_names=list(names), output_names=outputs, dynamic_axes=axes,
            opset_version=opset, dynamo=False,
        )  # fmt: skip
    fused = fuse_onnx(path, model.config)
    if not int8:
        return path, fused
    quantized = quantize_onnx(path, folder)
    shutil.rmtree(float_folder)
    return quantized, fused


class OnnxTeacherEngine:
    """An exported teacher run by onnxruntime: `engine(**inputs)` gives the outputs a transformers model would
    (`logits`, and `hidden_states` indexed as the model's, `None` where a layer was not exported)."""

    def __init__(self, path: str, num_hidden_layers: int, hidden_layers: Sequence[int], threads: int | None = None):
        self.session = onnx_session(path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.num_hidden_layers, self.hidden_layers = num_hidden_layers, tuple(sorted(set(hidden_layers)))

    def __call__(self, output_hidden_states: bool = False, device=None, **inputs) -> ModelOutput:
        feed = {}
        for name in self.input_names:
            value = inputs.get(name)
            if value is None and name in ("token_type_ids", "attention_mask"):
                value = (torch.zeros_like if name == "token_type_ids" else torch.ones_like)(inputs["input_ids"])
            feed[name] = value.detach().cpu().numpy()
        names = (
            ["logits", *(f"hidden_states.{layer}" for layer in self.hidden_layers)] if output_hidden_states else None
        )
        values = self.session.run(names or ["logits"], feed)
        logits = torch.from_numpy(values[0]).to(device)
        if not output_hidden_states:
            return ModelOutput(logits=logits)
        hidden = [None] * (self.num_hidden_layers + 1)
        for layer, value in zip(self.hidden_layers, values[1:]):
            hidden[layer] = torch.from_numpy(value).to(device)
        return ModelOutput(logits=logits, hidden_states=tuple(hidden))


def measure_agreement(
    teacher: nn.Module, engine: OnnxTeacherEngine, batches: Iterable[dict], temperature: float = 1.0
) -> dict:
    """The engine's outputs against the PyTorch teacher's on `batches`: the share of items (examples, or real tokens)
    whose most likely class agrees (`top1_agreement`), the mean KL(PyTorch || engine) of their distributions at
    `temperature` (`kl`), and the largest relative error `||h_engine - h|| / ||h||` of the exported hidden states."""
    names = _forward_names(teacher)
    agree = items = 0
    kl_sum, hidden_error = 0.0, 0.0
    with torch.no_grad():
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k in names and k in _ONNX_INPUTS}
            expected = teacher(**inputs, output_hidden_states=bool(engine.hidden_layers), return_dict=True)
            got = engine(**inputs, output_hidden_states=bool(engine.hidden_layers), device="cpu")
            reference, logits = expected.logits.float().cpu(), got.logits.float()
            mask = torch.ones(reference.shape[:-1], dtype=torch.bool)
            if reference.dim() == 3 and "attention_mask" in inputs:
                mask = inputs["attention_mask"].bool().cpu()
            agree += int(((reference.argmax(-1) == logits.argmax(-1)) & mask).sum())
            items += int(mask.sum())
            log_p = torch.log_softmax(reference / temperature, -1)
            log_q = torch.log_softmax(logits / temperature, -1)
            kl_sum += float(((log_p.exp() * (log_p - log_q)).sum(-1) * mask).sum())
            for layer in engine.hidden_layers:
                h, h_engine = expected.hidden_states[layer].float().cpu(), got.hidden_states[layer]
                hidden_error = max(hidden_error, float((h_engine - h).norm() / h.norm().clamp_min(1e-12)))
    kl = max(kl_sum / max(items, 1), 0.0)  # (a float sum of zeros can be -0.0)
    result = {"top1_agreement": agree / max(items, 1), "kl": kl, "sample_items": items}
    if engine.hidden_layers:
        result["hidden_relative_error"] = hidden_error
    return result


def sample_batches(dataset, data_collator, count: int = 64, batch_size: int = 32) -> list[dict]:
    """The first `count` examples of `dataset`, batched by `data_collator`: the sample an engine is measured on."""
    rows = [dataset[i] for i in range(min(count, len(dataset)))]
    return [data_collator(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


def run_teacher_on_onnxruntime(
    teacher: PreTrainedModel,
    sample: Iterable[dict],
    engine: str = "onnxruntime",
    hidden_layers: Sequence[int] = (),
    temperature: float = 1.0,
    max_kl: float = DEFAULT_MAX_KL,
    threads: int | None = None,
) -> dict:
    """Exports `teacher`, measures the engine against it on `sample` (padded batches of the training data), refuses
    it when its KL passes `max_kl`, and then runs the teacher's forward passes on onnxruntime: `teacher(**inputs)` is
    the engine's from here on (logits, and `hidden_states` of the exported `hidden_layers`; no attention maps, no
    gradients). The measurement is also kept as `teacher.distillation_engine`.

    Args:
        teacher (`PreTrainedModel`): an encoder teacher (BERT, MiniLM, RoBERTa, DistilBERT, ...).
        sample (iterable of `dict`): padded batches of the data it will see.
        engine (`str`): `"onnxruntime"` (float32) or `"onnxruntime-int8"` (int8 weights).
        hidden_layers (sequence of `int`): the hidden states the losses compare (0 is the embedding output).
        temperature (`float`): the distillation temperature (the KL of the agreement is measured at it).
        max_kl (`float`): the largest mean KL(PyTorch || engine) per item accepted, at `temperature` (>= 0).
        threads (`int`, *optional*): onnxruntime's intra-op threads (default: torch's).

    Returns:
        `dict`: `engine`, `top1_agreement`, `kl`, `sample_items` (and `hidden_relative_error`, and
            `fused_operators`: the counts of operators fused for onnxruntime, where the family has fusions).
    """
    if engine not in TEACHER_ENGINES[1:]:
        raise ValueError(f"teacher_engine must be one of {TEACHER_ENGINES}, got {engine!r}")

    if task_name_of(teacher) in (None, "causal-lm"):
        raise ValueError(
            f"teacher_engine={engine!r} runs encoder teachers; this teacher ({type(teacher).__name__}) is a decoder: "
            "serve it with teacher_server_url, or keep teacher_engine='pytorch'"
        )
    folder = tempfile.mkdtemp(prefix="hf-distill-teacher-")
    try:
        path, fused = export_teacher_onnx(teacher, folder, hidden_layers, int8=engine.endswith("int8"))
        runner = OnnxTeacherEngine(path, teacher.config.num_hidden_layers, hidden_layers, threads)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the session holds the graph in memory
    was_training = teacher.training
    teacher.eval()
    try:
        facts = measure_agreement(teacher, runner, sample, temperature)
    finally:
        teacher.train(was_training)
    facts = {"engine": engine, **{k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in facts.items()}}
    if fused:
        facts["fused_operators"] = fused
    if facts["kl"] > max_kl:
        raise ValueError(
            f"teacher_engine={engine!r} departs from the PyTorch teacher by a KL of {facts['kl']:.3g} per item at "
            f"T = {temperature:g} on {facts['sample_items']} sample items (top-1 agreement "
            f"{facts['top1_agreement']:.2%}), above teacher_engine_max_kl={max_kl:g}: use teacher_engine="
            "'onnxruntime' (float) or 'pytorch', or raise the threshold"
        )
    logger.info(
        f"Teacher on {engine}: top-1 agreement with PyTorch {facts['top1_agreement']:.2%} on "
        f"{facts['sample_items']} items, KL {facts['kl']:.2g}"
    )
    _install(teacher, runner)
    teacher.distillation_engine = facts
    return facts


def _install(teacher: PreTrainedModel, runner: OnnxTeacherEngine) -> None:
    """Replaces the teacher's forward with the engine's (the instance's, as Accelerate's hooks do): its signature
    names the graph's inputs, so `hf_distill.architectures.input_names` passes the same inputs.

    A call with labels is the teacher being evaluated (transformers' `Trainer` measuring its accuracy for the card),
    not distilled from: it runs the PyTorch model, which computes the loss the engine's graph does not, and reports the
    teacher's own figures. The trainer never passes the teacher labels."""
    names = set(runner.input_names)
    pytorch_forward = teacher.forward

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        output_hidden_states=False,
        output_attentions=False,
        return_dict=True,
        **unused,
    ):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if any(key in unused for key in ("labels", "start_positions", "end_positions")):
            flags = {"output_hidden_states": output_hidden_states, "output_attentions": output_attentions}
            given = {k: v for k, v in given.items() if v is not None}
            return pytorch_forward(**given, **flags, return_dict=return_dict, **unused)
        if output_attentions:
            raise ValueError(
                "the onnxruntime teacher gives logits and hidden states, no attention maps: set attention_weight=0 "
                "or teacher_engine='pytorch'"
            )
        parameter = next(self.parameters(), None)
        device = parameter.device if parameter is not None else input_ids.device
        inputs = {k: v for k, v in given.items() if k in names and v is not None}
        return runner(output_hidden_states=output_hidden_states, device=device, **inputs)

    teacher.forward = types.MethodType(forward, teacher)
