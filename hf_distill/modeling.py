"""`DistillationModel`: the student and the learned hidden-state projections, trained together."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from .architectures import input_names
from .fused_linear import LinearHead, head_of
from .layer_map import LayerMap


def is_peft_model(model: nn.Module) -> bool:
    return callable(getattr(model, "get_base_model", None)) and hasattr(model, "peft_config")


def build_projections(teacher_width: int, student: PreTrainedModel, layer_map: LayerMap) -> nn.ModuleList | None:
    """One `nn.Linear(student_width, teacher_width)` per layer pair (FitNets regressors), or `None` if widths match."""
    student_width = student.config.hidden_size
    if teacher_width == student_width:
        return None
    return nn.ModuleList(
        nn.Linear(student_width, teacher_width, dtype=student.dtype) for _ in layer_map.hidden_state_indices()
    )


class DistillationModel(nn.Module):
    """Runs the student and projects the hidden states that the hidden-state loss compares.

    The projections live here, not in the student, so that they train with it (and are synchronised by DDP along
    with it) but never become part of the exported student. Attributes that the wrapper does not have are looked up
    on the student, so the Trainer sees the student's `config`, `main_input_name`, and so on.

    Args:
        student (`PreTrainedModel`): the student.
        projections (`nn.ModuleList`, *optional*): one projection per pair of `layer_map`.
        layer_map (`LayerMap`, *optional*): the layer pairs.
        output_hidden_states (`bool`): whether the losses need hidden states.
        output_attentions (`bool`): whether the losses need attention maps.

    Attributes:
        linear_head (`bool`): in training, the student makes no logits over the vocabulary: `logits` is a
            [`~hf_distill.fused_linear.LinearHead`] of its final hidden states and output layer, which the task's
            fused linear loss reads (set by the trainer where the run allows it; evaluation always makes logits).
    """

    linear_head = False

    def __init__(
        self,
        student: PreTrainedModel,
        projections: nn.ModuleList | None = None,
        layer_map: LayerMap | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ):
        super().__init__()
        self.student = student
        self.projections = projections
        self.layer_map = layer_map
        self.output_hidden_states = output_hidden_states
        self.output_attentions = output_attentions
        self._student_inputs = input_names(student)

    def forward(self, **inputs):
        inputs = {k: v for k, v in inputs.items() if k in self._student_inputs}
        head = self.linear_head and self.training
        if head:  # the last position's logits only; the loss makes the others chunk by chunk from the hidden states
            inputs["logits_to_keep"] = 1
        outputs = self.student(
            **inputs,
            output_hidden_states=self.output_hidden_states or head,
            output_attentions=self.output_attentions,
            return_dict=True,
        )
        if head:
            outputs["logits"] = LinearHead(outputs.hidden_states[-1], *head_of(self.student))
        if self.output_hidden_states:
            # Projections are applied inside forward so that DDP sees them used by the wrapped module.
            hidden = [outputs.hidden_states[s] for _, s in self.layer_map.hidden_state_indices()]
            if self.projections is not None:
                hidden = [projection(h) for projection, h in zip(self.projections, hidden)]
            outputs["projected_hidden_states"] = tuple(hidden)
        return outputs

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "student":
                raise
            return getattr(self.student, name)
