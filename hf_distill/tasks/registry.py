"""The registry of tasks: each task's file registers its class ([`register_task`]); a task is then found by its name or
pipeline tag ([`get_task`]) or from a model's head ([`task_name_of`], [`task_for`])."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..architectures import unwrap
from .base import Task

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "TASKS",
    "get_task",
    "register_task",
    "resolve_task_name",
    "task_for",
    "task_name_of",
    "task_name_of_class",
]

_REGISTRY: dict[str, type[Task]] = {}
# The registered task classes by name, in order of registration (which is the precedence of `task_name_of_class`).
TASKS: Mapping[str, type[Task]] = MappingProxyType(_REGISTRY)


def register_task(cls: type[Task]) -> type[Task]:
    """Adds a [`Task`] subclass to the registry (returns it, so it can decorate the class).

    Raises:
        `ValueError`: the class has no name, pipeline tag or auto mapping, or its name or pipeline tag is already
        taken by another task.
    """
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"register_task takes a subclass of Task, got {cls!r}")
    for attribute in ("name", "pipeline_tag", "mapping_name"):
        if not getattr(cls, attribute):
            raise ValueError(f"{cls.__name__} has no {attribute}; a task must declare it to be registered")
    for other in _REGISTRY.values():
        taken = {other.name, other.pipeline_tag} & {cls.name, cls.pipeline_tag}
        if taken:
            raise ValueError(
                f"cannot register {cls.__name__}: {sorted(taken)[0]!r} is already the name or pipeline tag of "
                f"{other.__name__}"
            )
    _REGISTRY[cls.name] = cls
    return cls


def get_task(name: str) -> type[Task]:
    """The task class of a task name (`masked-lm`) or pipeline tag (`fill-mask`).

    Raises:
        `ValueError`: naming the accepted names.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    for cls in _REGISTRY.values():
        if cls.pipeline_tag == name:
            return cls
    pipelines = ", ".join(cls.pipeline_tag for cls in _REGISTRY.values())
    raise ValueError(f"unknown task {name!r}; choose one of: {pipelines} (or {', '.join(_REGISTRY)})")


def resolve_task_name(name: str) -> str:
    """hf_distill's task name for a task name or a pipeline tag (`fill-mask` -> `masked-lm`); see [`get_task`]."""
    return get_task(name).name


def task_name_of(model: PreTrainedModel) -> str | None:
    """The task of a model's head, from its class name (`None` for a bare encoder or an unsupported head); for a peft
    model, its base model's."""
    model = unwrap(model)
    return task_name_of_class(type(model).__name__, getattr(model.config, "is_encoder_decoder", False))


def task_name_of_class(class_name: str, is_encoder_decoder: bool = False) -> str | None:
    """The task of a model class, by name (as `config.architectures` lists it), or `None`.

    A class listed in two auto mappings (XLMWithLMHeadModel) gets the task registered first.
    """
    if is_encoder_decoder:
        return None  # BART's ForConditionalGeneration is in the masked-LM mapping, but it is a seq2seq model
    from transformers.models.auto import modeling_auto

    for cls in _REGISTRY.values():
        if class_name in _mapping_class_names(getattr(modeling_auto, cls.mapping_name)):
            return cls.name
    return None


def task_for(model: PreTrainedModel) -> Task:
    """The [`Task`] of a model (its settings, such as regression, read from its config).

    Raises:
        `ValueError`: for a head that distillation does not support yet, naming the supported ones.
    """
    name = task_name_of(model)
    if name is None:
        raise ValueError(
            f"{type(model).__name__} has a head that hf_distill cannot distil yet; supported: "
            f"{', '.join(_REGISTRY)} models (e.g. BertForSequenceClassification, BertForTokenClassification, "
            "BertForQuestionAnswering, BertForMaskedLM, GPT2LMHeadModel, LlamaForCausalLM)"
        )
    return _REGISTRY[name].from_model(unwrap(model))


def _mapping_class_names(mapping) -> set[str]:
    names = set()
    for value in mapping.values():
        names.update(value if isinstance(value, (list, tuple)) else (value,))
    return names
