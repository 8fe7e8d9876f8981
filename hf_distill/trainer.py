"""`DistillationTrainer`: a `transformers.Trainer` that trains a student to reproduce a frozen teacher."""

from __future__ import annotations

import copy
import inspect
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_pt_utils import LengthGroupedSampler, nested_detach
from transformers.utils import find_labels

from . import losses
from .alignment import vocabulary_difference
from .architectures import input_names, unwrap
from .batch_order import SeededLengthGroupedSampler, has_lengths
from .cache import CACHE_INDEX_COLUMN, CacheIndexCollator, TeacherCache, check_cache_serves, check_collator
from .completions import CompletionSource, check_completion_settings
from .config import DistillationConfig
from .cross_tokenizer import TokenizerPair, own_tokenizer, teacher_inputs
from .engines import run_teacher_on_onnxruntime, sample_batches
from .fused_linear import LinearHead, head_of, probe_linear_head
from .hub import PushArguments, check_repo_id, create_repo, push_student
from .layer_map import LayerMap
from .log import get_logger
from .model_card import write_model_card
from .modeling import DistillationModel, build_projections, is_peft_model
from .output_folders import last_complete_checkpoint, refuse_teacher_folder
from .relations import QKVCapture
from .tasks import UNITS, task_for
from .teacher import (
    average_soft_targets,
    check_compatibility,
    check_tokenizer,
    load_model,
    load_student,
    model_facts,
    place_teacher,
    prepare_attention_maps,
    teacher_placement,
)
from .teacher_server import server_facts, teacher_from_server
from .terms import LossContext, active_terms, fused_terms, linear_head_refusal, needs_of

logger = get_logger(__name__)

PROJECTIONS_NAME = "distillation_projections.safetensors"


class DistillationTrainer(Trainer):
    """Trains `model` (the student) to reproduce `teacher_model`, with the loss terms of a [`DistillationConfig`].

    The teacher is frozen, kept in eval mode, placed on the device by the trainer's Accelerator without being wrapped
    for gradients, and never saved. The student is wrapped in a [`DistillationModel`] together with the learned
    projections of the hidden-state loss: `trainer.model` is that wrapper, `trainer.student` the student itself.
    Checkpoints hold the student and the projections (so a resumed run continues exactly); `save_model` writes only
    the student, as a plain transformers folder.

    Every loss term is normalised by the number of items (examples, tokens or labels) in the whole optimizer step, on
    all processes, so gradient accumulation and data parallelism give the same update as one large batch.

    Args:
        model (`PreTrainedModel` or `str`): the student, or its folder or Hub id: loaded with the head of the teacher's
            task (a base model gets a new head with the teacher's labels).
        teacher_model (`PreTrainedModel` or `str`, *optional*): the teacher, or its path or Hub id; defaults to
            `args.teacher_model_name_or_path`.
        args (`DistillationConfig`): the training and distillation settings.
        teacher_processing_class (`PreTrainedTokenizerBase`, *optional*): the teacher's tokenizer, when the student
            has a tokenizer of its own (`processing_class`, saved with the student). When their vocabularies differ,
            each model reads its own tokenization of every example: the datasets must hold both (the task's
            `prepare_datasets(..., teacher_tokenizer=...)` makes them; see [`~hf_distill.cross_tokenizer`]), and the
            collator is wrapped to batch them side by side. When they are the same, nothing changes.
        **kwargs: passed to [`~transformers.Trainer`] (datasets, collator, `processing_class`, callbacks, ...).
    """

    # Each term is a sum divided by the item count of the whole accumulated batch: no further division by the
    # number of accumulation steps (see `_get_num_items_in_batch`).
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: PreTrainedModel | str | os.PathLike | None = None,
        teacher_model: PreTrainedModel | str | list[PreTrainedModel | str] | None = None,
        args: DistillationConfig | None = None,
        teacher_cache: TeacherCache | str | None = None,
        peft_config: Any | None = None,
        teacher_processing_class: PreTrainedTokenizerBase | None = None,
        **kwargs: Any,
    ):
        if args is None:
            args = DistillationConfig(output_dir="distilled-student")
        if not isinstance(args, DistillationConfig):
            raise TypeError(f"args must be a DistillationConfig, got {type(args).__name__}")
        if isinstance(model, (str, os.PathLike)):
            model, teacher_model = load_student(model, teacher_model, args)
        if not isinstance(model, PreTrainedModel):
            raise TypeError(
                "model (the student) must be a transformers PreTrainedModel, or its folder or Hub id; got "
                f"{type(model).__name__}"
            )
        self.task = task_for(model)
        teachers = self._load_teachers(model, teacher_model, args)
        teacher_cache = teacher_cache if teacher_cache is not None else args.teacher_cache
        if isinstance(teacher_cache, (str, os.PathLike)):
            teacher_cache = TeacherCache(str(teacher_cache))
        tokenizer = kwargs.get("processing_class")
        tokenizer = tokenizer if isinstance(tokenizer, PreTrainedTokenizerBase) else None
        # A teacher behind an inference server (teacher_server_url): its top-k distributions, asked batch by batch.
        self.teacher_server = teacher_from_server(
            args, model, self.task, active_terms(args), teachers, teacher_cache, tokenizer
        )
        if not teachers and teacher_cache is None and self.teacher_server is None:
            raise ValueError(
                "no teacher: pass teacher_model=..., or set teacher_model_name_or_path, teacher_cache or "
                "teacher_server_url in the config"
            )
        self.teacher_cache = teacher_cache
        self.teacher_weights = self._teacher_weights(len(teachers), args)
        if args.intermediate_teacher >= max(len(teachers), 1):
            raise ValueError(
                f"intermediate_teacher={args.intermediate_teacher} but there are {len(teachers)} teachers; give an "
                f"index from 0 to {max(len(teachers), 1) - 1}"
            )
        # The teacher whose internals (hidden states, attention) the student learns from; its facts size the losses.
        main_teacher = teachers[args.intermediate_teacher] if teachers else None
        if main_teacher is not None:
            facts = model_facts(main_teacher)
        else:
            facts = teacher_cache.teacher if teacher_cache is not None else server_facts(self.teacher_server)
        # Two tokenizers of different vocabularies: each model reads its own tokenization of every example.
        self.tokenizers = self._tokenizer_pair(model, tokenizer, teacher_processing_class)
        check_completion_settings(args, teacher_cache, self.task)
        across = self.tokenizers is not None
        teacher_tokenizer = self.tokenizers.teacher if across else tokenizer
        for teacher in teachers:
            check_compatibility(teacher, model, self.task, teacher_tokenizer, across_tokenizers=across)
        # Never a teacher's folder, whatever the user says (the command also refuses any folder holding files it did
        # not write, unless --overwrite_output_dir; a Python caller owns its output_dir, as with the Trainer).
        refuse_teacher_folder(
            args.output_dir, [*args.teacher_paths, *(t.name_or_path for t in teachers if t.name_or_path)]
        )
        if (
            main_teacher is not None
            and teacher_tokenizer is not None
            and len(teacher_tokenizer) > main_teacher.get_input_embeddings().num_embeddings
        ):  # its last ids would fail deep in the embedding: say so now, with both sizes
            source = "teacher_processing_class" if across else "processing_class"
            check_tokenizer(teacher_tokenizer, main_teacher, main_teacher.name_or_path or source)
        if across and len(tokenizer) > model.get_input_embeddings().num_embeddings:
            check_tokenizer(tokenizer, model, model.name_or_path or "processing_class", role="student")
        # What the models must give is what the active loss terms declare they need.
        self.terms = active_terms(args)
        self._needs = needs_of(self.terms)
        if across:
            self._check_across_tokenizers(len(teachers), kwargs)
        self.layer_map = None
        if self._needs & {"hidden_states", "attentions"}:
            self.layer_map = LayerMap.from_spec(
                args.layer_map, facts["num_hidden_layers"], model.config.num_hidden_layers
            )
        if teacher_cache is not None:
            check_compatibility(teacher_cache.teacher, model, self.task, teacher_tokenizer, across_tokenizers=across)
            kwargs["train_dataset"] = self._join_cache(teacher_cache, main_teacher, len(teachers), args, kwargs)
        if "attentions" in self._needs:
            if not self.layer_map.attention_indices():
                fields = " and ".join(f"{t.weight_field} > 0" for t in self.terms if "attentions" in t.needs)
                raise ValueError(
                    f"{fields} but layer_map {self.layer_map.spec()} pairs no transformer layers (layer 0 is the "
                    "embedding output, which has no attention map)"
                )
            prepare_attention_maps(main_teacher, model)
        if peft_config is not None or args.peft_config:
            model = _peft_student(model, peft_config if peft_config is not None else args.peft_config, self.task)
        # Hooked after the adapter is in place: an adapter wraps the projections, and the wrapped modules are the ones
        # that run.
        self._relations = _relation_captures(main_teacher, model, args) if "qkv" in self._needs else None
        projections = None
        if any(term.projects_hidden_states for term in self.terms):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                projections = build_projections(facts["hidden_size"], model, self.layer_map)
        wrapper = DistillationModel(
            model,
            projections=projections,
            layer_map=self.layer_map,
            output_hidden_states="hidden_states" in self._needs,
            output_attentions="attentions" in self._needs,
        )
        super().__init__(model=wrapper, args=args, **kwargs)
        # The wrapper's forward takes **inputs; the loss kwargs are handled here, not by the model.
        self.model_accepts_loss_kwargs = False
        if across:  # the teacher's tokenization batched beside the student's, then the task's alignment
            self.data_collator = self.tokenizers.collator(self.data_collator, self.task)
        if teacher_cache is not None:
            self.data_collator = CacheIndexCollator(self.data_collator)
        if self.args.label_names is None:
            self.label_names = find_labels(type(model))
        self.teacher_name = facts["name_or_path"] or args.teacher_model_name_or_path
        self.teacher_engine = self._run_teachers_on_engine(teachers)
        self.teachers = [self._prepare_teacher(teacher) for teacher in teachers]
        self.teacher = self.teachers[args.intermediate_teacher] if self.teachers else None
        self._teacher_heads = self._take_fused_linear_loss(model)
        self._teacher_input_names = [input_names(teacher) for teacher in self.teachers]
        self._warned_no_teacher = False
        self._in_checkpoint = False
        self.completions = CompletionSource.from_args(
            args,
            model,
            getattr(tokenizer, "pad_token_id", None),
            getattr(tokenizer, "eos_token_id", None),
            tokenizers=self.tokenizers,
            teacher=main_teacher,
            collate=self.data_collator,  # across tokenizers: completed pairs are batched and aligned as any
        )
        self._train_terms: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
        self._train_steps_seen: set[int] = set()
        self._eval_sums: dict[str, torch.Tensor] = {}

    @property
    def student(self) -> PreTrainedModel:
        """The student being trained (unwrapped)."""
        return self.accelerator.unwrap_model(self.model).student

    def _get_train_sampler(self, train_dataset=None):
        """Batches of similar lengths by default (`train_sampling_strategy="group_by_length"`: less padding); random
        batches for data whose examples hold no token ids to measure (e.g. `inputs_embeds`), with a warning."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and not has_lengths(
            dataset, self.args.length_column_name, self.processing_class
        ):
            logger.warning(
                "train_sampling_strategy='group_by_length' needs each training example's input ids (or a "
                f"'{self.args.length_column_name}' column); these examples have none, so batches are drawn at random"
            )
            strategy = self.args.train_sampling_strategy
            self.args.train_sampling_strategy = "random"
            try:
                return super()._get_train_sampler(train_dataset)
            finally:
                self.args.train_sampling_strategy = strategy
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            sampler = SeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
        return sampler

    # ---- the frozen teachers ----------------------------------------------------------------------------------------

    @staticmethod
    def _load_teachers(model, teacher_model, args) -> list[PreTrainedModel]:
        if teacher_model is None:
            teacher_model = args.teacher_paths
        if not isinstance(teacher_model, (list, tuple)):
            teacher_model = [teacher_model]
        teachers = []
        for teacher in teacher_model:
            if isinstance(teacher, (str, os.PathLike)):
                teacher = load_model(str(teacher), model, args.teacher_model_init_kwargs)
            if teacher is model:
                raise ValueError("a teacher and the student are the same object; the student must be a separate model")
            teachers.append(teacher)
        return teachers

    @staticmethod
    def _teacher_weights(count: int, args: DistillationConfig) -> list[float]:
        weights = args.teacher_weights
        if weights is None:
            return [1.0 / max(count, 1)] * max(count, 1)
        if count and len(weights) != count:
            raise ValueError(f"teacher_weights has {len(weights)} weights for {count} teachers; give one per teacher")
        return [w / sum(weights) for w in weights]

    def _tokenizer_pair(self, student, tokenizer, teacher_tokenizer) -> TokenizerPair | None:
        """The teacher's and the student's tokenizers when their vocabularies differ (each model then reads its own
        tokenization), else None. Without `teacher_tokenizer`, refuses a student whose own saved tokenizer differs
        from `processing_class`: it would read ids it was not trained on, silently."""
        if teacher_tokenizer is None:
            own = own_tokenizer(student) if tokenizer is not None else None
            difference = vocabulary_difference(tokenizer, own) if own is not None else None
            if difference is not None:
                raise ValueError(
                    f"the student {student.name_or_path!r} has a tokenizer of its own whose vocabulary differs from "
                    f"processing_class's ({difference}): it would read ids it was not trained on. Pass the student's "
                    "tokenizer as processing_class and the teacher's as teacher_processing_class (each model then "
                    "reads its own tokenization), or give a student of the teacher's tokenizer"
                )
            return None
        if not isinstance(teacher_tokenizer, PreTrainedTokenizerBase):
            raise TypeError(f"teacher_processing_class must be a tokenizer, got {type(teacher_tokenizer).__name__}")
        if tokenizer is None:
            raise ValueError(
                "teacher_processing_class is the teacher's tokenizer; pass the student's as processing_class too (it "
                "is saved with the student)"
            )
        return TokenizerPair.of(teacher_tokenizer, tokenizer)

    def _check_across_tokenizers(self, num_teachers: int, kwargs) -> None:
        """Refuses, at start-up, what cannot cross from the teacher's tokens to the student's: a loss term or a task
        without an alignment, several teachers, and data that holds one tokenization."""
        pair = self.tokenizers
        pair.check_crosses(self.task, self.terms)
        if num_teachers > 1:
            raise ValueError(
                f"{num_teachers} teachers and a student of another tokenizer: the alignment pairs one teacher's "
                "tokens with the student's; give one teacher"
            )
        for where in ("train_dataset", "eval_dataset"):
            given = kwargs.get(where)
            for name, dataset in (given if isinstance(given, dict) else {where: given}).items():
                if dataset is not None:
                    pair.check_data(dataset, self.task, name)

    def _join_cache(self, cache: TeacherCache, teacher, num_teachers: int, args, kwargs) -> Any:
        """Checks that `cache` belongs to this teacher, data and settings, and gives the training data the column that
        joins each example to its cached row (it travels with the example through shuffling and sharding)."""
        import datasets

        if num_teachers > 1:
            raise ValueError("a teacher cache holds one teacher's outputs; it cannot stand in for several teachers")
        dataset = kwargs.get("train_dataset")
        if not isinstance(dataset, datasets.Dataset):
            raise TypeError(
                f"teacher_cache needs train_dataset to be the datasets.Dataset the cache was built from, got "
                f"{type(dataset).__name__}"
            )
        check_collator(kwargs.get("data_collator"), dataset)
        pair = self.tokenizers
        if pair is None:
            cache.check(teacher=teacher, tokenizer=kwargs.get("processing_class"), dataset=dataset)
        else:  # the cache holds the teacher's outputs on its own tokenization: checked against the teacher's side
            cache.check(teacher=teacher, tokenizer=pair.teacher, dataset=pair.teacher_view(dataset, self.task))
        check_cache_serves(cache, self.terms, args, self.layer_map, across_vocabularies=pair and self.task)
        if CACHE_INDEX_COLUMN in dataset.column_names:
            dataset = dataset.remove_columns(CACHE_INDEX_COLUMN)
        return dataset.add_column(CACHE_INDEX_COLUMN, np.arange(len(dataset), dtype=np.int64))

    def _prepare_teacher(self, teacher: PreTrainedModel) -> nn.Module:
        return place_teacher(teacher, self.accelerator, self.args)

    def _run_teachers_on_engine(self, teachers: list[PreTrainedModel]) -> dict | None:
        """With `teacher_engine` onnxruntime(-int8): the teachers' forward passes run by onnxruntime, each measured
        against its PyTorch self on the first training examples ([`~hf_distill.engines.run_teacher_on_onnxruntime`]);
        the main teacher's measurement, for the model card."""
        engine = self.args.teacher_engine
        if engine == "pytorch" or not teachers:
            return None

        users = [term.weight_field for term in self.terms if term.needs & {"attentions", "qkv"}]
        if users:
            raise ValueError(
                f"teacher_engine={engine!r} gives the teacher's logits and hidden states, and {' and '.join(users)} "
                "> 0 read its attention maps or projections: set them to 0 or use teacher_engine='pytorch'"
            )
        layers = sorted({t for t, _ in self.layer_map.hidden_state_indices()}) if self.layer_map else []
        sample = self._sample_batches()
        main = self.args.intermediate_teacher
        measured = [
            run_teacher_on_onnxruntime(
                teacher, sample, engine, layers if i == main else [], self.args.temperature,
                self.args.teacher_engine_max_kl,
            )
            for i, teacher in enumerate(teachers)
        ]  # fmt: skip
        return measured[main]

    def _sample_batches(self, count: int = 64) -> list[dict]:
        """The first `count` training examples, batched as training batches them (the teacher engine's check)."""
        import datasets

        dataset = self.train_dataset
        if dataset is None or not hasattr(dataset, "__len__"):
            raise ValueError("teacher_engine measures the engine on the training data: pass train_dataset")
        if isinstance(dataset, datasets.Dataset):
            dataset = self._remove_unused_columns(dataset, description="the teacher engine's sample")
        return sample_batches(dataset, self.data_collator, count, self.args.per_device_train_batch_size)

    def _take_fused_linear_loss(self, student: nn.Module) -> list[bool]:
        """Makes the student give its head's inputs instead of logits in training where the run allows the fused
        linear loss ([`~hf_distill.terms.linear_head_refusal`], `fused_linear_loss`), and says which teachers
        do too: a live teacher alone, whole on the student's device, whose logits are its head's linear map."""
        setting = self.args.fused_linear_loss
        none = [False] * len(self.teachers)
        if setting == "never":
            return none
        if self.tokenizers is not None:
            reason = "the student has a tokenizer of its own: the soft targets are aligned from both models' logits"
        else:
            reason = linear_head_refusal(self.task, self.terms, student, teacher_placement(self.accelerator))
        if reason is not None:
            if setting == "always":
                raise ValueError(
                    f"fused_linear_loss='always' but {reason}; use fused_linear_loss='auto' (the logits where the "
                    "fused loss does not apply) or 'never'"
                )
            logger.info(f"The loss terms read the student's logits (no fused linear loss): {reason}")
            return none
        self.accelerator.unwrap_model(self.model).linear_head = True
        if len(self.teachers) != 1 or teacher_placement(self.accelerator, self.args.teacher_on_cpu) != "device":
            return none
        reason = probe_linear_head(self.teachers[0], "teacher")
        if reason is not None:
            logger.info(f"The teacher gives its logits to the fused linear loss: {reason}")
        return [reason is None]

    def _teacher_forward(self, inputs: dict, training: bool) -> Any:
        """The teachers' outputs for `inputs`, on the student's device; `None` when no teacher can give them.

        Training batches read the teacher cache when there is one. With several teachers, the logits are their
        ensemble's ([`average_soft_targets`]) and the hidden states and attention maps the intermediate teacher's.
        A training step whose active terms need no teacher (labels only: the no-teacher baseline) runs none.
        """
        if training and not any(term.needs_teacher for term in self.terms):
            return None
        if self.teacher_server is not None:
            where = f"training step {self.state.global_step}" if training else "an evaluation batch"
            return self.teacher_server(inputs["input_ids"], inputs.get("attention_mask"), where=where)
        if training and self.teacher_cache is not None and CACHE_INDEX_COLUMN in inputs:
            # Put back at the teacher's own real tokens (its side of a batch of two tokenizations).
            own = teacher_inputs(inputs) if self.tokenizers is not None else inputs
            reference = own["input_ids"] if "input_ids" in own else own["inputs_embeds"]
            return self.teacher_cache.outputs(
                inputs[CACHE_INDEX_COLUMN], own.get("attention_mask"), reference.shape[:2], self.args.device
            )
        if not self.teachers:
            if not self._warned_no_teacher:
                logger.warning(
                    "No live teacher: the teacher cache covers the training data only, so evaluation reports the task "
                    "loss and metrics without the distillation terms (pass teacher_model too, to have them)"
                )
                self._warned_no_teacher = True
            return None
        main = self.args.intermediate_teacher
        outputs = [
            self._run_teacher(teacher, names, inputs, internals=i == main, head=training and self._teacher_heads[i])
            for i, (teacher, names) in enumerate(zip(self.teachers, self._teacher_input_names))
        ]
        if len(outputs) == 1:
            return outputs[0]
        combined = outputs[main]
        for name in self.task.logit_fields:
            combined[name] = average_soft_targets(
                [out[name] for out in outputs], self.teacher_weights, self.args.temperature, self.task.is_regression
            )
        return combined

    def _run_teacher(self, teacher: nn.Module, names: set[str], inputs: dict, internals: bool, head=False) -> Any:
        """`head`: the teacher's logits come back as a [`~hf_distill.fused_linear.LinearHead`] of its last hidden
        states and output layer, for the fused linear loss (the teacher makes the last position's logits only)."""
        if self.tokenizers is not None:  # its own tokenization of the batch
            inputs = teacher_inputs(inputs)
        # Without the labels: the teacher's own loss would be a second pass over its logits, for nothing.
        labels = {"labels", *self.task.label_names}
        fed = {k: v for k, v in inputs.items() if k in names and k not in labels}
        if head:
            fed["logits_to_keep"] = 1
        device = _device_of(teacher)
        moved = device is not None and device != self.args.device
        if moved:
            fed = {k: v.to(device) for k, v in fed.items()}
        with torch.no_grad():
            outputs = teacher(
                **fed,
                output_hidden_states=internals and "hidden_states" in self._needs or head,
                output_attentions=internals and "attentions" in self._needs,
                return_dict=True,
            )
        if head:
            outputs["logits"] = LinearHead(outputs.hidden_states[-1], *head_of(teacher))
        if moved:
            outputs = type(outputs)(**{k: _to_device(v, self.args.device) for k, v in outputs.items()})
        return outputs

    # ---- loss -------------------------------------------------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device) -> tuple[list, dict]:
        """The micro-batches of one optimizer step, and their item counts; with on-policy / sequence-level
        distillation (`lmbda`, `seq_kd`), some batches are replaced by completions of their prompts
        ([`~hf_distill.completions.CompletionSource`]) before they are counted, so the loss is normalised over the
        generated tokens of the whole step."""
        batches, counts = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.completions is None:
            return batches, counts
        teacher = self.accelerator.unwrap_model(self.teacher) if self.teacher is not None else None
        step = self.state.global_step
        batches = [
            self.completions.complete(batch, step, index, self.student, teacher)[0]
            for index, batch in enumerate(batches)
        ]
        return batches, self._get_num_items_in_batch(batches, device)

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> dict[str, torch.Tensor]:
        """Counts the items of the whole optimizer step (all micro-batches, summed over processes), per unit."""
        counts = [self.task.count_items(b) for b in batch_samples]
        totals = torch.stack([torch.stack([c[unit] for unit in UNITS]) for c in counts]).sum(0)
        totals = totals.to(device)
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        return dict(zip(UNITS, totals))

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: dict[str, torch.Tensor] | None = None,
    ):
        """Weighted sum of the distillation terms; each term is also recorded for logging."""
        training = model.training
        label_keys = {"labels", *self.label_names, *self.task.label_names}
        model_inputs = {k: v for k, v in inputs.items() if k not in label_keys}
        student_out = model(**model_inputs)
        teacher_out = self._teacher_forward(inputs, training)
        # In training the counts cover the whole optimizer step; otherwise (evaluation) this batch alone.
        global_counts = training and isinstance(num_items_in_batch, dict)
        counts = (
            num_items_in_batch
            if global_counts
            else {k: v.to(self.args.device) for k, v in self.task.count_items(inputs).items()}
        )
        terms = self._loss_terms(student_out, teacher_out, inputs, counts, training)
        if self._relations is not None:  # the captured projections are used: let them go
            self._relations.student.clear()
            self._relations.teacher.clear()

        weights = self.args.loss_weights
        loss = sum(
            (weights[name] * value for name, (value, _) in terms.items()), torch.zeros((), device=self.args.device)
        )
        if training:
            self._record_train_terms(terms)
        else:
            self._record_eval(terms, counts, student_out, teacher_out, inputs)
        if global_counts and self.accelerator.num_processes > 1:
            # DDP averages gradients over processes; each process' loss is already a share of the global mean.
            loss = loss * self.accelerator.num_processes
        return (loss, student_out) if return_outputs else loss

    def _loss_terms(self, student_out, teacher_out, inputs, counts, training) -> dict:
        """Each active term: name -> (value, unit its sum was divided by). Without teacher outputs (evaluation with
        only a teacher cache) the terms that need no teacher alone."""
        context = LossContext(
            student=student_out,
            teacher=teacher_out,
            inputs=inputs,
            counts=counts,
            task=self.task,
            args=self.args,
            layer_map=self.layer_map,
            relations=self._relations,
            training=training,
            tokenizers=self.tokenizers,
        )
        fused = fused_terms(context)  # several terms in one pass, where one applies
        terms = {}
        for term in self.terms:
            if teacher_out is None and term.needs_teacher:
                continue
            value = fused[term.name] if term.name in fused else term.compute(context)
            if value is not None:
                terms[term.name] = value
        return terms

    # ---- logging of the terms ---------------------------------------------------------------------------------------

    def _record_train_terms(self, terms: dict) -> None:
        # Each micro-batch value is (local sum / global count): summed over the micro-batches of a step and over
        # processes it is the step's mean, so log() divides by the number of steps only.
        self._train_steps_seen.add(self.state.global_step)
        for name, (value, _) in terms.items():
            self._train_terms[name] = self._train_terms[name] + value.detach().double().cpu()

    def _record_eval(self, terms, counts, student_out, teacher_out, inputs) -> None:
        sums = self._eval_sums
        for name, (value, unit) in terms.items():
            count = counts[unit].double().cpu()
            sums[f"loss_{name}"] = sums.get(f"loss_{name}", 0) + torch.stack(
                [value.detach().double().cpu() * count, count]
            )
        if self.task.is_regression or teacher_out is None:
            return
        for target in self.task.logit_targets(student_out, teacher_out, inputs):
            mask = target.mask if target.mask is not None else torch.ones(target.student.shape[:-1], dtype=torch.bool)
            mask = mask.to(target.student.device)
            top_k = isinstance(target.teacher, losses.TopKTargets)  # a teacher server's distributions
            teacher_top1 = target.teacher.ids[..., 0] if top_k else target.teacher.argmax(-1)
            agree = (target.student.argmax(-1) == teacher_top1) & mask
            kl = losses.soft_target_loss(target.student, target.teacher, 1.0, mask, num_items=1)
            n = mask.sum().double().cpu()
            sums["teacher_agreement"] = sums.get("teacher_agreement", 0) + torch.stack([agree.sum().double().cpu(), n])
            sums["teacher_kl"] = sums.get("teacher_kl", 0) + torch.stack([kl.detach().double().cpu(), n])

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._train_steps_seen:
            names = sorted(self._train_terms)
            totals = torch.stack([self._train_terms[n] for n in names]).to(self.args.device)
            if self.accelerator.num_processes > 1:
                totals = self.accelerator.reduce(totals, reduction="sum")
            for name, total in zip(names, totals.tolist()):
                logs[f"loss_{name}"] = total / len(self._train_steps_seen)
            self._train_terms.clear()
            self._train_steps_seen.clear()
        super().log(logs, start_time)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """Runs the usual evaluation, then adds each loss term and the student's fidelity to the teacher."""
        self._eval_sums = {}
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        names = sorted(self._eval_sums)
        if names:
            stacked = torch.stack([self._eval_sums[n] for n in names]).to(self.args.device)
            if self.accelerator.num_processes > 1:
                stacked = self.accelerator.reduce(stacked, reduction="sum")
            means = {
                name: total / count if count else float("nan") for name, (total, count) in zip(names, stacked.tolist())
            }
            for name, mean in means.items():
                output.metrics[f"{metric_key_prefix}_{name}"] = mean
            # The loss is the weighted sum of the exact means of the terms, not the mean of each batch's loss (which
            # weighs a batch by its examples whatever unit its terms are averaged over).
            weights = self.args.loss_weights
            terms = [name.removeprefix("loss_") for name in means if name.startswith("loss_")]
            if terms:
                output.metrics[f"{metric_key_prefix}_loss"] = sum(weights[t] * means[f"loss_{t}"] for t in terms)
        self._eval_sums = {}
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Always computes the distillation loss (labels or not), and returns only the task's predictions, never the
        # hidden states and attention maps that the losses needed.
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        labels = self.task.labels(inputs)
        return loss.detach(), nested_detach(self.task.predictions(outputs)), nested_detach(labels)

    def distillation_settings(self) -> dict[str, float | str]:
        """The config's distillation settings, with the layer map resolved to its teacher:student pairs."""
        settings = self.args.distillation_settings()
        if self.layer_map is not None:
            settings["layer_map"] = self.layer_map.spec()
        if self.tokenizers is not None:
            settings["tokenizers"] = self.tokenizers.settings(self.task, self.args)
        if self.teacher_cache is not None:
            cached = self.teacher_cache.settings
            settings["teacher_cache"] = {
                "top_k": cached["top_k"],
                "hidden_layers": cached["hidden_layers"],
                "hidden_dtype": cached["hidden_dtype"],
            }
            if cached.get("logit_samples"):
                settings["teacher_cache"]["logit_samples"] = cached["logit_samples"]
        if self.teacher_engine is not None:  # what ran the teacher, and how closely it agreed with PyTorch
            settings["teacher_engine"] = dict(self.teacher_engine)
        if self.teacher_server is not None:  # what served the teacher (never its address or key)
            server = self.teacher_server
            settings["teacher_server"] = {"api": server.api, "model": server.model, "top_k": server.top_k}
        return settings

    # ---- the model card ---------------------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """`Trainer.evaluate`, with the task's metrics when no `compute_metrics` was given, remembering the result
        (`last_eval_metrics`, `last_eval_prefix`) for the model card.

        Without a `compute_metrics` (and `preprocess_logits_for_metrics`), each evaluation uses the task's own
        ([`~hf_distill.tasks.Task.evaluation`] of the dataset evaluated): accuracy and macro-F1, MSE and Pearson,
        entity F1, exact match, perplexity. Question answering needs the evaluation split's offset, context and answer
        columns: without them its metrics are left out.
        """
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        default = None
        given = self.compute_metrics is not None or self.preprocess_logits_for_metrics is not None
        if not given and not isinstance(dataset, dict):  # a dict of datasets comes back here one by one
            default = self._task_evaluation(dataset)
        if default is not None:
            self.compute_metrics = default.compute_metrics
            self.preprocess_logits_for_metrics = default.preprocess_logits_for_metrics
        try:
            metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            if default is not None:
                self.compute_metrics = self.preprocess_logits_for_metrics = None
        self.last_eval_metrics, self.last_eval_prefix = dict(metrics), metric_key_prefix
        return metrics

    def _task_evaluation(self, dataset):
        """The task's evaluation of `dataset`, or None when the dataset lacks what it reads (logged once)."""
        if dataset is None:
            return None
        teacher = self.teachers[0] if self.teachers else None
        teacher_config = getattr(teacher, "config", None) or self.student.config
        try:
            return self.task.evaluation(dataset, teacher_config)
        except (KeyError, ValueError, TypeError) as error:
            if not getattr(self, "_warned_no_task_metrics", False):
                logger.warning(
                    f"evaluate() reports no {self.task.pipeline_tag} metrics: the evaluation data lacks what they "
                    f"read ({error.__class__.__name__}: {error}); pass compute_metrics=..., or keep those columns"
                )
                self._warned_no_task_metrics = True
            return None

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,  # noqa: A002 - the Hub metadata field's name
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Writes `README.md` into `output_dir`: the student's card, naming the teacher and showing what was measured.

        Used by `push_to_hub`. Figures come from `distillation_metrics.json` in `output_dir` when the run wrote one
        (`hf-distill train` and [`~hf_distill.measure_distillation`] do), else from the last `trainer.evaluate()`;
        the distillation settings come from this trainer's config, the rows from its task's card metrics. The license
        defaults to the teacher's (its card's metadata); the training and evaluation loss curves are plotted into
        `distillation_training.png` and shown, when matplotlib is installed.
        """
        if not self.is_world_process_zero():
            return
        last = getattr(self, "last_eval_metrics", None)
        write_model_card(
            self.args.output_dir,
            self.task,
            self.distillation_settings(),
            self.state.log_history,
            teacher=self.teacher_name,
            evaluation=(last, self.last_eval_prefix) if last else None,
            teacher_name=finetuned_from,
            dataset_name=dataset if isinstance(dataset, str) else None,
            license=license,
            language=language,
            model_id=model_name or self.args.hub_model_id,
        )

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        **card_kwargs,
    ) -> str | None:
        """Saves the student, writes its card, and publishes `output_dir` to `args.hub_model_id` in one commit.

        Only the student's files go up (weights, config, tokenizer, card, metrics, plots: [`hub.files_to_push`]): never
        the projections, optimizer state, training arguments (which hold the token) or checkpoints. Returns the commit
        URL (on the main process).
        """
        repo_id = self._hub_repo_id()
        check_repo_id(repo_id, "hub_model_id")  # before the card is written for it
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        self.create_model_card(model_name=repo_id, **card_kwargs)
        settings = PushArguments(
            private=self.args.hub_private_repo,
            revision=revision or self.args.hub_revision,
            commit_message=commit_message,
            token=token if token is not None else self.args.hub_token,
        )
        return push_student(self.args.output_dir, repo_id, settings)

    # ---- pushes during training: transformers' hub machinery, narrowed to the student's files ----------------------

    # `hub_strategy` values that exist to put resumable training state on the Hub.
    _TRAINING_STATE_STRATEGIES = ("checkpoint", "all_checkpoints")

    def _hub_repo_id(self) -> str:
        repo_id = getattr(self, "hub_model_id", None) or self.args.hub_model_id
        return repo_id or os.path.basename(os.path.abspath(self.args.output_dir))

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Checks the push settings and creates the repo, at start-up (`push_to_hub=True`), before any training.

        Refuses `hub_strategy="checkpoint"` / `"all_checkpoints"`: they exist to publish a resumable checkpoint,
        that is optimizer, scheduler and RNG state and `training_args.bin` (which holds `hub_token` in plain text),
        which hf_distill never publishes. `"every_save"` pushes the student's files at each save, `"end"` only at the
        end. The repo is created through [`hub.create_repo`], with a timeout and a clear message on failure.
        """
        strategy = str(getattr(self.args.hub_strategy, "value", self.args.hub_strategy))
        if strategy in self._TRAINING_STATE_STRATEGIES:
            raise ValueError(
                f"hub_strategy={strategy!r} publishes whole checkpoints (optimizer, scheduler and RNG state, "
                "trainer_state.json and training_args.bin, which holds the hub token in plain text) so that training "
                "can resume from the Hub; hf_distill never publishes training state. Use hub_strategy='every_save' "
                "(the student's files at each save) or 'end' (one commit at the end), and keep checkpoints local "
                "(resume with resume_from_checkpoint)."
            )

        repo_id = self._hub_repo_id()
        check_repo_id(repo_id, "hub_model_id" if self.args.hub_model_id else "the repo name taken from output_dir")
        self.push_in_progress = None
        if not self.is_world_process_zero():
            return
        self.hub_model_id = create_repo(
            repo_id,
            private=private if private is not None else self.args.hub_private_repo,
            token=token if token is not None else self.args.hub_token,
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """With `hub_strategy="every_save"`: publishes the student's files of the checkpoint just saved, in one commit
        (the files a final push sends, never the training state beside them). A failed push is logged and training
        goes on; the final `push_to_hub` reports its own failures."""
        strategy = str(getattr(self.args.hub_strategy, "value", self.args.hub_strategy))
        if not self.is_world_process_zero() or strategy != "every_save":
            return

        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        if self.args.save_strategy == "steps":
            message = f"Training in progress, step {self.state.global_step}"
        else:
            message = f"Training in progress, epoch {int(self.state.epoch or 0)}"
        settings = PushArguments(revision=self.args.hub_revision, commit_message=message, token=self.args.hub_token)
        try:
            push_student(checkpoint_folder, self._hub_repo_id(), settings)
        except (RuntimeError, ValueError) as err:
            logger.warning(f"Pushing {checkpoint_folder} during training failed; training goes on. {err}")

    # ---- saving and resuming: the student alone, projections beside it in checkpoints -------------------------------

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            columns = list(inspect.signature(unwrap(self.student).forward).parameters)
            columns += list({"label", "label_ids", CACHE_INDEX_COLUMN, *self.label_names})
            if self.tokenizers is not None:  # the teacher's tokenization and the alignment columns
                columns += self.tokenizers.columns(self.task)
            self._signature_columns = columns

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Saves the student as a plain transformers folder (no projection weights), with tokenizer and args.

        A peft student is saved as its adapter; with `merge_adapter_on_save`, the final save (not checkpoints) is the
        model with the adapter merged into its weights. In a checkpoint, the projections are written right after the
        student: before transformers writes `trainer_state.json` (what makes a checkpoint complete) and rotates the
        older checkpoints away, so an interruption never leaves only a checkpoint without them.
        """
        if state_dict is not None:
            state_dict = {k.removeprefix("student."): v for k, v in state_dict.items() if k.startswith("student.")}
        wrapper = self.model
        student = self.accelerator.unwrap_model(wrapper).student
        if self.args.merge_adapter_on_save and is_peft_model(student) and not self._in_checkpoint:
            # A copy is merged, so that training (or another save) can go on with the adapter.
            student, state_dict = copy.deepcopy(student).merge_and_unload(), None
        self.model = student
        try:
            super()._save(output_dir, state_dict=state_dict)
        finally:
            self.model = wrapper
        if self._in_checkpoint:
            self._save_projections(output_dir if output_dir is not None else self.args.output_dir)

    def _save_projections(self, folder: str) -> None:
        projections = self.accelerator.unwrap_model(self.model).projections
        if projections is None or not self.args.should_save:
            return
        state = {k: v.detach().contiguous().cpu() for k, v in projections.state_dict().items()}
        path = os.path.join(folder, PROJECTIONS_NAME)
        # Written under a temporary name and renamed: a file by the final name is always whole.
        safetensors.torch.save_file(state, path + ".tmp", metadata={"format": "pt"})
        os.replace(path + ".tmp", path)

    def _save_checkpoint(self, model, trial) -> None:
        # transformers saves the model (our `_save`, which adds the projections), then optimizer, scheduler and RNG
        # state, then trainer_state.json, and only then rotates older checkpoints: a failure before the end keeps them.
        self._in_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._in_checkpoint = False

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        _check_checkpoint_complete(resume_from_checkpoint)
        wrapper = self.accelerator.unwrap_model(self.model if model is None else model)
        super()._load_from_checkpoint(resume_from_checkpoint, model=wrapper.student)
        self._load_projections(resume_from_checkpoint, wrapper)

    def _load_best_model(self) -> None:
        wrapper = self.model
        self.model = wrapper.student
        try:
            super()._load_best_model()
        finally:
            self.model = wrapper
        self._load_projections(self.state.best_model_checkpoint, wrapper)

    @staticmethod
    def _load_projections(checkpoint: str, wrapper: DistillationModel) -> None:
        if wrapper.projections is None:
            return
        path = os.path.join(checkpoint, PROJECTIONS_NAME)
        if not os.path.isfile(path):
            _check_checkpoint_complete(checkpoint)
            raise FileNotFoundError(
                f"checkpoint {checkpoint} has no {PROJECTIONS_NAME}, but this run trains hidden-state projections; "
                "resume from a checkpoint of a run with the same hidden-state settings"
            )
        device = next(wrapper.projections.parameters()).device
        wrapper.projections.load_state_dict(safetensors.torch.load_file(path, device=str(device)))


def _check_checkpoint_complete(checkpoint: str) -> None:
    """Refuses a checkpoint whose saving was interrupted (transformers writes `trainer_state.json` last), naming the
    newest complete one beside it."""
    if os.path.isfile(os.path.join(checkpoint, TRAINER_STATE_NAME)):
        return

    previous = last_complete_checkpoint(os.path.dirname(os.path.abspath(checkpoint)))
    hint = f"resume from {previous}" if previous else "no complete checkpoint is left beside it; start again"
    raise FileNotFoundError(
        f"checkpoint {checkpoint} is incomplete (no {TRAINER_STATE_NAME}: the run stopped while saving it): {hint}, "
        f"and delete {checkpoint}"
    )


@dataclass
class _Relations:
    student: QKVCapture
    teacher: QKVCapture
    heads: int


def _relation_captures(teacher: PreTrainedModel, student: nn.Module, args: DistillationConfig) -> _Relations:
    """Hooks on the query/key/value projections of the relation layers of teacher and student (MiniLM)."""
    t_layers, s_layers = teacher.config.num_hidden_layers, student.config.num_hidden_layers
    if args.relation_layers == "last":
        t_layer, s_layer = t_layers, s_layers
    else:
        t_layer, s_layer = (int(x) for x in args.relation_layers.split(":"))
        if not (1 <= t_layer <= t_layers and 1 <= s_layer <= s_layers):
            raise ValueError(
                f"relation_layers {args.relation_layers!r} is out of range: the teacher has layers 1..{t_layers}, "
                f"the student 1..{s_layers}"
            )
    heads = args.relation_heads or teacher.config.num_attention_heads
    captures = _Relations(QKVCapture(student, s_layer), QKVCapture(teacher, t_layer), heads)
    for role, capture in (("student", captures.student), ("teacher", captures.teacher)):
        for name, width in capture.projections.widths.items():
            if name in args.relation_types and width % heads:
                raise ValueError(
                    f"relation_heads={heads} does not divide the {role}'s {name} width {width}; choose a number of "
                    "relation heads that divides every query/key/value width of both models (relation_heads=...)"
                )
        capture.attach()
    return captures


def _peft_student(model: PreTrainedModel, peft_config: Any, task) -> nn.Module:
    """The student with a PEFT adapter (LoRA, ...): only the adapter's parameters (and the modules the config asks to
    save, such as a new classification head) train."""
    try:
        import peft
    except ImportError as error:
        raise ImportError("peft_config needs the peft package: pip install 'hf-distill[peft]'") from error
    if isinstance(model, peft.PeftModel):
        raise ValueError("the student is already a PeftModel; pass the base model with peft_config, or no peft_config")
    if isinstance(peft_config, dict):
        config = copy.deepcopy(peft_config)  # peft extends some of its lists (modules_to_save) in place
        if "peft_type" not in config:
            raise ValueError(f"peft_config needs a peft_type such as 'LORA', got {peft_config!r}")
        config.setdefault("task_type", task.peft_task_type)
        peft_config = peft.get_peft_config(config)
    return peft.get_peft_model(model, peft_config)


def _device_of(module: nn.Module) -> torch.device | None:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else None


def _to_device(value, device):
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    return value
