"""Loading the teacher (and any model that goes with it), and checking up front that teacher and student fit.

[`load_model`] is the one loader: the command, the scripts, the demo, the trainer (a teacher given by path) and the
student builder all load through it. What differs between tasks (the auto class, whether outputs are over the
vocabulary or over labels) is read from the [`~hf_distill.tasks.Task`], never from a table here.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto import modeling_auto

from .log import get_logger
from .model_files import VOCABULARY_FILES
from .tasks import TASKS, Task, get_task, task_for, task_name_of
from .tasks.base import is_default_id2label
from .tasks.language_modeling import differ_only_by_padding

logger = get_logger(__name__)

# Keyword arguments of the teacher's `from_pretrained` that also apply to reading its config.
_CONFIG_KWARGS = ("revision", "token", "trust_remote_code", "cache_dir", "subfolder", "local_files_only")
# The task of a model whose config names no architecture (what `hf-distill train` always assumed).
_DEFAULT_TASK = "text-classification"
# The task of a model read from a .gguf file, whose config names no architecture: llama.cpp holds causal LMs.
_GGUF_TASK = "causal-lm"


def load_model(
    name_or_path: str | os.PathLike,
    task: Task | type[Task] | str | PreTrainedModel | None = None,
    init_kwargs: dict | None = None,
    role: str = "teacher",
) -> PreTrainedModel:
    """Loads a teacher (or a student, or a second teacher) with the auto class of its task.

    Args:
        name_or_path (`str`): a folder written by `save_pretrained`, or a Hub id.
        task: the task whose auto class loads the model: a [`Task`] (class or instance), a task name or pipeline tag
            (`"fill-mask"`), or a model whose head the loaded one must share (a student for a teacher, or the other
            way round). By default, the task of the head that the model's config names ([`task_of_pretrained`]).
        init_kwargs (`dict`, *optional*): keyword arguments of `from_pretrained` (`torch_dtype`, `revision`, ...).
        role (`str`): `"teacher"` or `"student"`, for the error messages.

    Raises:
        `FileNotFoundError`: a local folder that does not exist. `OSError`: naming the path or id when it cannot be
        loaded. `ValueError`: a head hf_distill cannot tell the task of, naming `--task`.
    """
    path = str(name_or_path)
    check_model_path(path, role)
    if task is None:
        task_class = task_of_pretrained(path, init_kwargs, role)
    else:
        task_class = _task_class(task)
        check_head(path, task_class, init_kwargs, role, wanted_by=_wanted_by(task))
    location, gguf_kwargs = pretrained_location(path)
    try:
        model = task_class.auto_class.from_pretrained(location, **gguf_kwargs, **(init_kwargs or {}))
    except (OSError, ValueError) as error:
        raise OSError(
            f"could not load the {role} {path!r} ({error.__class__.__name__}: {str(error).splitlines()[0]}). "
            "Give a folder written by save_pretrained, a .gguf file, or a Hub id reachable from this machine"
        ) from error
    if gguf_kwargs:
        _plain_from_gguf(model, path)
    return model


def _plain_from_gguf(model: PreTrainedModel, path: str) -> None:
    """A model read from a .gguf file, made a plain float model: transformers de-quantised its weights on loading but
    keeps a GGUF "quantizer" and `quantization_config`, which a student built from it would save into its config (and
    the student folder would then be read as a GGUF checkpoint). It is named by its file, not by the folder around
    it, in the card and the cache."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.config.name_or_path = path
    model.name_or_path = path


def pretrained_location(name_or_path: str | os.PathLike) -> tuple[str, dict]:
    """Where `from_pretrained` finds a model or tokenizer: `(folder, {"gguf_file": file name})` for a path to a
    `.gguf` file (llama.cpp's format: transformers de-quantises its weights and builds the tokenizer and config
    from its metadata; needs the `gguf` package, `pip install 'hf-distill[llm]'`), else `(name_or_path, {})`."""
    path = str(name_or_path)
    if path.lower().endswith(".gguf") and os.path.isfile(path):
        folder, name = os.path.split(os.path.abspath(path))
        return folder, {"gguf_file": name}
    return path, {}


def load_tokenizer(
    name_or_path: str | os.PathLike, model: PreTrainedModel | None = None, role: str = "teacher"
) -> PreTrainedTokenizerBase:
    """The tokenizer at `name_or_path` (the teacher's folder or Hub id unless another is named); checked against
    `model`'s embeddings when a model is given ([`check_tokenizer`])."""
    if str(name_or_path).lower().endswith(".gguf"):
        check_gguf_file(str(name_or_path), role)
    location, gguf_kwargs = pretrained_location(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(location, **gguf_kwargs)
    if model is not None:
        check_tokenizer(tokenizer, model, name_or_path, role)
    return tokenizer


def has_tokenizer(name_or_path: str | os.PathLike) -> bool:
    """Whether a model holds a tokenizer of its own: a local folder with vocabulary files, a .gguf file (its metadata
    holds one), or a Hub id (a model repository ships its tokenizer)."""
    path = str(name_or_path)
    if pretrained_location(path)[1]:
        return True
    if os.path.isdir(path):
        return any(os.path.isfile(os.path.join(path, name)) for name in VOCABULARY_FILES)
    return not os.path.exists(path) and not _looks_local(path)


def check_tokenizer(
    tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, source: str | os.PathLike, role: str = "teacher"
) -> None:
    """Refuses a tokenizer that does not fit `model`'s input embeddings, before anything is trained.

    - Larger than the embedding matrix: its last ids would index past it (an `IndexError` deep in the embedding at
      the first batch that holds one).
    - Less than half its rows: what transformers builds from a folder without tokenizer files (a 5-token tokenizer of
      special tokens, turning every word into the unknown token), or another model's tokenizer. Embedding matrices
      are often padded beyond the tokenizer (to a multiple of 64 or 128), never to twice its size.

    Raises:
        `ValueError`: naming both sizes, the tokenizer's source and how to fix it (`--tokenizer_name`).
    """
    size, rows = len(tokenizer), _vocab_size(model)
    source = str(source)
    if size > rows:
        raise ValueError(
            f"the tokenizer of {source!r} has {size} tokens but the {role}'s embeddings have {rows} rows: token ids "
            f">= {rows} would fail in the embedding. Give the tokenizer the {role} was trained with (--tokenizer_name)"
        )
    if 2 * size < rows:
        missing = ""
        if os.path.isdir(source) and not has_tokenizer_files(source):
            missing = (
                f" The folder {source!r} holds no tokenizer files ({', '.join(VOCABULARY_FILES[:3])}, "
                "tokenizer_config.json, ...), so transformers built an empty tokenizer that reads every word as "
                "its unknown token."
            )
        raise ValueError(
            f"the tokenizer of {source!r} has {size} tokens but the {role}'s embeddings have {rows} rows: it is not "
            f"the {role}'s tokenizer.{missing} Copy the {role}'s tokenizer files into the folder "
            "(tokenizer.save_pretrained), or pass --tokenizer_name with the tokenizer it was trained with"
        )


def has_tokenizer_files(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a tokenizer's vocabulary (`tokenizer.json`, `vocab.txt`, ...; `tokenizer_config.json`
    alone holds none)."""
    return any(os.path.isfile(os.path.join(folder, name)) for name in VOCABULARY_FILES)


def position_limit(model: PreTrainedModel) -> int | None:
    """The longest input `model` can read: the size of its table of learned or fixed position embeddings
    (`max_position_embeddings`, GPT-2's `n_positions`); `None` for models without one (rotary, relative or ALiBi
    positions have no hard limit)."""
    table = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and name.rsplit(".", 1)[-1] in _POSITION_TABLES:
            table = module
            break
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if table is None or not isinstance(limit, int):
        return None
    if table.padding_idx is not None:  # RoBERTa numbers positions from padding_idx + 1
        limit = min(limit, table.num_embeddings - table.padding_idx - 1)
    return limit


# Names of the position-embedding tables of absolute-position models (BERT, RoBERTa, DistilBERT, GPT-2, OPT, ...).
_POSITION_TABLES = ("position_embeddings", "wpe", "embed_positions")


def check_head(
    path: str, task_class: type[Task], init_kwargs: dict | None = None, role: str = "teacher", wanted_by: str = ""
) -> None:
    """Refuses to load `path` with `task_class`'s head when its config names a head of another task: that head would
    be dropped and a new one initialised at random, then trained or distilled from without a word. A bare model (no
    head, e.g. `BertModel`) or a head of no distilled task gets the new head, as asked.

    Raises:
        `ValueError`: naming the model's architecture and task, the task asked for and the fix.
    """
    try:
        config = _pretrained_config(path, init_kwargs)
    except (OSError, ValueError):
        return  # the loader names what is wrong with the path
    architecture = (getattr(config, "architectures", None) or [None])[0]
    if not architecture or getattr(config, "is_encoder_decoder", False):
        return
    tasks = _tasks_of_class_name(architecture)
    if not tasks or task_class in tasks:
        return
    own = tasks[0]
    wanted = wanted_by or f"--task {task_class.pipeline_tag}"
    fix = (
        f"drop --task (the {role}'s head gives the task), or give a {role} with a {task_class.pipeline_tag} head"
        if wanted.startswith("--task")
        else f"give a {role} with a {task_class.pipeline_tag} head"
    )
    raise ValueError(
        f"the {role} {path!r} is a {architecture} ({own.pipeline_tag}) but {wanted} asks for a "
        f"{task_class.pipeline_tag} head: its own head would be dropped and a new one trained from random weights. "
        f"Fix: {fix}"
    )


def _wanted_by(task) -> str:
    """What asked for a task, for `check_head`'s message: the `--task` flag, or a model whose head must be shared."""
    if isinstance(task, nn.Module):
        return f"the other model ({type(task).__name__})"
    return ""


def task_of_pretrained(path: str, init_kwargs: dict | None = None, role: str = "teacher") -> type[Task]:
    """The task class of the model at `path`, from the head its config names (`config.architectures`).

    A config that names no architecture is taken for a text classifier (what `hf-distill train` always assumed).

    Raises:
        `ValueError`: when the named architecture is a bare model or a head hf_distill does not distil.
    """
    check_model_path(path, role)
    config = _pretrained_config(path, init_kwargs)
    architectures = getattr(config, "architectures", None) or []
    if not architectures and pretrained_location(path)[1]:
        return get_task(_GGUF_TASK)  # a GGUF config names no architecture; llama.cpp's files hold language models
    if not architectures:
        return get_task(_DEFAULT_TASK)
    task_class = None if getattr(config, "is_encoder_decoder", False) else _task_of_class_name(architectures[0])
    if task_class is None:
        raise ValueError(
            f"cannot tell the task of the {role} {path!r} from its architecture {architectures[0]}; pass --task "
            f"({', '.join(t.pipeline_tag for t in TASKS.values())}), or give a {role} with a task head "
            f"({', '.join(TASKS)})"
        )
    return task_class


def _pretrained_config(path: str, init_kwargs: dict | None = None):
    location, gguf_kwargs = pretrained_location(path)
    config_kwargs = {k: v for k, v in (init_kwargs or {}).items() if k in _CONFIG_KWARGS}
    return AutoConfig.from_pretrained(location, **gguf_kwargs, **config_kwargs)


# What a saved model's folder holds whatever else it does: its config (a peft adapter folder, its adapter config).
_MODEL_CONFIG_FILES = ("config.json", "adapter_config.json")


def check_model_path(path: str | None, role: str = "teacher") -> None:
    """Fails early, naming the flag, when a model is not given or is a local folder that does not exist.

    A name is taken for a folder when it looks like one (`./x`, `../x`, `/x`, `~/x`, or more than `org/name`), and
    also when the Hub is off (`HF_HUB_OFFLINE`) and no Hub download of that id is cached: a typo then says that the
    folder does not exist (with the closest existing folder, if one is close) rather than that the Hub is unreachable.
    """
    if not path:
        raise ValueError(f"--{role}_model_name_or_path is required: a fine-tuned model folder or Hub id")
    if path.lower().endswith(".gguf") and not os.path.isdir(path):
        check_gguf_file(path, role)
        return
    if os.path.isdir(path) and not any(os.path.isfile(os.path.join(path, n)) for n in _MODEL_CONFIG_FILES):
        entries = sorted(os.listdir(path))
        held = "is empty" if not entries else f"holds {', '.join(entries[:4])}{' ...' if len(entries) > 4 else ''}"
        raise FileNotFoundError(
            f"could not load the {role} {path!r}: the folder {held}, with no config.json: it is not a saved model. "
            f"Give a folder written by save_pretrained (--{role}_model_name_or_path)"
        )
    if os.path.exists(path):
        return
    offline_miss = hub_constants.HF_HUB_OFFLINE and not _in_hub_cache(path)
    if not (_looks_local(path) or offline_miss):
        return
    what = f"could not load the {role} {path!r}"
    expanded = os.path.expanduser(path)
    if expanded != path and os.path.exists(expanded):
        raise FileNotFoundError(f"{what}: '~' is not expanded here; give the full path, {expanded!r}")
    close = _closest_existing(path)
    hint = f"; did you mean {close!r}?" if close else "."
    offline = "" if _looks_local(path) else " (and no Hub download of that id is cached; HF_HUB_OFFLINE is set)"
    raise FileNotFoundError(
        f"{what}: no such folder{offline}{hint} Give a folder written by save_pretrained, or a Hub id "
        f"(--{role}_model_name_or_path)"
    )


def check_gguf_file(path: str, role: str = "teacher") -> None:
    """Refuses, before transformers reads it, a `.gguf` path that is missing, not a GGUF file, or cut short (an
    unfinished download or copy), each with the fix (transformers' own errors say "cannot reshape array of size ...",
    "cannot mmap an empty file").

    Raises:
        `FileNotFoundError`: no such file. `ValueError`: not a GGUF file, or damaged or truncated.
    """
    what = f"could not load the {role} {path!r}"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no such file. Give the path of a .gguf file (--{role}_model_name_or_path)")
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        held = "it is empty" if size == 0 else f"it begins with {magic!r}, not b'GGUF'"
        raise ValueError(
            f"{what}: it is not a GGUF file ({held}). Give a .gguf file written by llama.cpp or the gguf package, or "
            f"a folder written by save_pretrained (--{role}_model_name_or_path)"
        )
    try:
        import gguf
    except ImportError:
        raise ImportError(
            f"reading the {role} {path!r} needs the gguf package: pip install 'hf-distill[llm]'"
        ) from None
    try:
        reader = gguf.GGUFReader(path)
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
        problem = None if end <= size else f"its tensors need {end:,} bytes, the file has {size:,}"
    except (ValueError, OSError, IndexError, KeyError) as error:  # what gguf raises on a header cut short
        problem = f"reading it failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    if problem is not None:
        raise ValueError(
            f"{what}: the GGUF file is truncated or damaged ({problem}); an unfinished download or copy? Download or "
            "copy it again"
        )


def _in_hub_cache(repo_id: str) -> bool:
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def _closest_existing(path: str) -> str | None:
    """`path` with each missing part replaced by the closest existing sibling folder (difflib), when that gives a
    folder that exists; else None."""
    parts = Path(os.path.expanduser(path)).parts
    current = Path(parts[0]) if os.path.isabs(parts[0]) else Path(".")
    for part in parts[1:] if os.path.isabs(parts[0]) else parts:
        candidate = current / part
        if not candidate.exists():
            try:
                siblings = [entry.name for entry in os.scandir(current) if entry.is_dir()]
            except OSError:
                return None
            match = difflib.get_close_matches(part, siblings, n=1, cutoff=0.6)
            if not match:
                return None
            candidate = current / match[0]
        current = candidate
    return str(current) if current.is_dir() else None


def _task_class(task) -> type[Task]:
    if isinstance(task, str):
        return get_task(task)
    if isinstance(task, nn.Module):  # a model (or a peft model) whose head to match
        return type(task_for(task))
    return task if isinstance(task, type) else type(task)


def _task_of_class_name(class_name: str) -> type[Task] | None:
    # In order of registration: a class listed in two mappings (XLMWithLMHeadModel) gets the first task.
    tasks = _tasks_of_class_name(class_name)
    return tasks[0] if tasks else None


def _tasks_of_class_name(class_name: str) -> list[type[Task]]:
    """The registered tasks whose auto class maps to `class_name`, in order of registration."""
    found = []
    for task_class in TASKS.values():
        mapping = getattr(modeling_auto, task_class.mapping_name)
        names = set()
        for value in mapping.values():
            names.update(value if isinstance(value, (list, tuple)) else (value,))
        if class_name in names:
            found.append(task_class)
    return found


def _looks_local(path: str) -> bool:
    # A Hub id is "name" or "org/name"; anything else (absolute, relative with ./, or deeper) is a local path.
    return (
        os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or os.sep != "/" and os.sep in path
    )


def model_facts(model: PreTrainedModel) -> dict:
    """What distillation needs to know about a teacher when only its outputs are at hand (a teacher cache): its head,
    vocabulary, labels and shape."""
    config = model.config
    return {
        "class": type(model).__name__,
        "task": task_name_of(model),
        "name_or_path": model.name_or_path,
        "vocab_size": _vocab_size(model),
        "output_vocab_size": _output_vocab_size(model),
        "num_labels": config.num_labels,
        "id2label": {str(k): v for k, v in config.id2label.items()},
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
    }


def check_compatibility(
    teacher: PreTrainedModel | dict,
    student: PreTrainedModel,
    task: Task,
    tokenizer=None,
    across_tokenizers: bool = False,
) -> None:
    """Fails with a message saying what differs, and how to fix it, if teacher and student cannot be distilled.

    They must have the same kind of head, read the same token ids (same vocabulary: embedding widths that differ only
    by padding rows beyond `tokenizer` are the same vocabulary), and, for classification, predict the same labels in
    the same order; language models must also predict over the same vocabulary (the task decides, see
    `check_vocabularies`). `teacher` is the model, or its [`model_facts`] (as a teacher cache records them).

    With `across_tokenizers` (the student has a tokenizer of its own, which differs from the teacher's: each reads
    its own ids, see [`~hf_distill.cross_tokenizer`]) the vocabularies are not compared; heads and labels still are.
    """
    facts = teacher if isinstance(teacher, dict) else model_facts(teacher)
    if facts["task"] != task.name:
        raise ValueError(
            f"the teacher is a {facts['class']} ({facts['task'] or 'no supported head'}) but the student is a "
            f"{type(student).__name__} ({task.name}); distil between models with the same kind of head"
        )
    tokenizer_size = len(tokenizer) if tokenizer is not None else None
    teacher_vocab, student_vocab = facts["vocab_size"], _vocab_size(student)
    same_ids = teacher_vocab == student_vocab or differ_only_by_padding(teacher_vocab, student_vocab, tokenizer_size)
    if not same_ids and not across_tokenizers:
        tokens = f" (the tokenizer has {tokenizer_size} tokens)" if tokenizer_size is not None else ""
        raise ValueError(
            f"vocabulary size differs: teacher {teacher_vocab}, student {student_vocab}{tokens}. Teacher and student "
            "read the same input ids, so they must share a tokenizer: build the student from the teacher with "
            "build_student(), or, for a student with a tokenizer of its own, give that tokenizer "
            "(--student_tokenizer_name; in Python processing_class, with the teacher's as teacher_processing_class)"
        )
    if task.vocabulary_outputs and not across_tokenizers:
        task.check_vocabularies(facts, _output_vocab_size(student), tokenizer_size)
    if not task.labelled_outputs:
        return
    teacher_labels, student_labels = facts["num_labels"], student.config.num_labels
    if teacher_labels != student_labels:
        raise ValueError(
            f"number of labels differs: teacher num_labels={teacher_labels}, student num_labels={student_labels}; "
            f"give the student num_labels={teacher_labels} and the teacher's id2label"
        )
    t_id2label, s_id2label = _names(facts["id2label"]), _names(student.config.id2label)
    if _placeholder_names(s_id2label) and not _placeholder_names(t_id2label):
        logger.info(f"The student has no label names; using the teacher's: {t_id2label}")
        student.config.id2label = dict(t_id2label)
        student.config.label2id = {name: i for i, name in t_id2label.items()}
    elif not _placeholder_names(s_id2label) and not _placeholder_names(t_id2label) and s_id2label != t_id2label:
        raise ValueError(
            f"label mapping differs: teacher id2label={t_id2label}, student id2label={s_id2label}. The soft targets "
            "are compared class by class; give the student the teacher's id2label and label2id"
        )


def prepare_attention_maps(teacher: PreTrainedModel, student: PreTrainedModel) -> None:
    """Makes both models return attention maps: checks head counts, and switches sdpa/flash attention to eager.

    sdpa and flash attention never materialise the attention probabilities (`output_attentions=True` then gives an
    empty tuple), so the attention loss needs the eager implementation.
    """
    t_heads, s_heads = teacher.config.num_attention_heads, student.config.num_attention_heads
    if t_heads != s_heads:
        raise ValueError(
            f"attention_weight > 0 compares attention maps head by head, but the teacher has {t_heads} heads and the "
            f"student {s_heads}; use a student with {t_heads} heads or set attention_weight=0"
        )
    for role, model in (("teacher", teacher), ("student", student)):
        implementation = model.config._attn_implementation
        if implementation != "eager":
            logger.warning(
                f"attention_weight > 0: switching the {role} from {implementation!r} to 'eager' attention, which "
                "returns attention maps (slower and uses more memory on long sequences)"
            )
            model.set_attn_implementation("eager")


def _vocab_size(model: PreTrainedModel) -> int:
    embeddings = model.get_input_embeddings()
    return embeddings.num_embeddings if embeddings is not None else model.config.vocab_size


def _output_vocab_size(model: PreTrainedModel) -> int:
    head = model.get_output_embeddings()
    return head.out_features if isinstance(head, nn.Linear) else model.config.vocab_size


def _placeholder_names(id2label: dict | None) -> bool:
    """Whether `id2label` is missing or holds only the placeholder names `LABEL_0`, `LABEL_1`, ... of transformers."""
    return not id2label or all(str(name) == f"LABEL_{int(index)}" for index, name in id2label.items())


def _names(id2label: dict) -> dict[int, str]:
    return {int(k): str(v) for k, v in id2label.items()}


# ---- placing the frozen teacher for each engine --------------------------------------------------------------------

TEACHER_PLACEMENTS = ("device", "cpu", "deepspeed-zero3", "fsdp")


def teacher_placement(accelerator: Accelerator, on_cpu: bool = False) -> str:
    """How the teacher is placed under the accelerator's engine (one of `TEACHER_PLACEMENTS`).

    - `device`: one full copy per process on its device (one process, DDP, DeepSpeed ZeRO-1/2): the teacher has no
      trainable parameters, so it is never wrapped in DistributedDataParallel;
    - `cpu`: kept on the CPU (`teacher_on_cpu`);
    - `deepspeed-zero3`: sharded over the processes by a DeepSpeed inference engine, gathered layer by layer;
    - `fsdp`: wrapped in FSDP, whose parameters are gathered when used.
    """
    engine = accelerator.distributed_type
    sharded = engine == DistributedType.FSDP or (
        engine == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3
    )
    if on_cpu:
        if sharded:
            raise ValueError(
                "teacher_on_cpu cannot be combined with DeepSpeed ZeRO-3 or FSDP, which already shard the teacher; "
                "use their CPU offload settings instead"
            )
        return "cpu"
    if engine == DistributedType.DEEPSPEED:
        return "deepspeed-zero3" if sharded else "device"
    return "fsdp" if engine == DistributedType.FSDP else "device"


def place_teacher(teacher: PreTrainedModel, accelerator: Accelerator, args) -> nn.Module:
    """Freezes the teacher, casts it to `args.teacher_dtype`, and places it as `teacher_placement` says."""
    teacher.eval()
    teacher.requires_grad_(False)
    if args.teacher_dtype != "auto":
        teacher.to(getattr(torch, args.teacher_dtype))
    placement = teacher_placement(accelerator, args.teacher_on_cpu)
    logger.info(f"Teacher placement: {placement} ({teacher.dtype})")
    if placement == "cpu":
        return teacher.to("cpu")
    if placement == "deepspeed-zero3":
        return _deepspeed_inference_engine(teacher, accelerator, args)
    if placement == "fsdp":
        return _fsdp_wrap(teacher, accelerator)
    # evaluation_mode=True: placed on the device (under mixed-precision autocast), without a DDP wrapper.
    return accelerator.prepare_model(teacher, evaluation_mode=True)


def _deepspeed_inference_engine(teacher: PreTrainedModel, accelerator: Accelerator, args) -> nn.Module:
    import deepspeed
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    # The trainer's own DeepSpeed config, with its "auto" values resolved for the teacher's width, and without
    # optimizer or scheduler: ZeRO-3 shards the teacher's parameters and gathers each layer for its forward pass.
    ds_config = HfTrainerDeepSpeedConfig(copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config))
    ds_config.trainer_config_process(args)
    ds_config.trainer_config_finalize(args, teacher, num_training_steps=0)
    config = ds_config.config
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    engine.eval()
    return engine


def _fsdp_wrap(teacher: PreTrainedModel, accelerator: Accelerator) -> nn.Module:
    plugin = accelerator.state.fsdp_plugin
    if plugin.fsdp_version == 2:
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        return fsdp2_prepare_model(accelerator, teacher)
    from torch.distributed.fsdp import FullyShardedDataParallel

    plugin.set_auto_wrap_policy(teacher)
    return FullyShardedDataParallel(
        teacher,
        sharding_strategy=plugin.sharding_strategy,
        cpu_offload=plugin.cpu_offload,
        auto_wrap_policy=plugin.auto_wrap_policy,
        mixed_precision=plugin.mixed_precision_policy,
        sync_module_states=plugin.sync_module_states,
        backward_prefetch=plugin.backward_prefetch,
        forward_prefetch=plugin.forward_prefetch,
        use_orig_params=plugin.use_orig_params,
        limit_all_gathers=plugin.limit_all_gathers,
        device_id=accelerator.device,
    )


# ---- several teachers ----------------------------------------------------------------------------------------------


def average_soft_targets(
    logits: list[torch.Tensor], weights: list[float], temperature: float, is_regression: bool = False
) -> torch.Tensor:
    r"""The logits of a teacher ensemble: one tensor whose soft targets are the weighted average of the teachers'.

    For classes, with weights $w_i$ summing to 1, the ensemble's distribution at temperature $T$ is
    $\bar p = \sum_i w_i \,\mathrm{softmax}(z_i / T)$, returned as the logits $T \log \bar p$ (so that
    $\mathrm{softmax}(\cdot / T) = \bar p$ exactly; their argmax is the ensemble's prediction). For regression outputs
    it is the weighted mean $\sum_i w_i z_i$.

    Args:
        logits (`list[torch.Tensor]`): each teacher's logits, all of shape `(..., num_classes)`.
        weights (`list[float]`): one weight per teacher, summing to 1.
        temperature (`float`): $T$.
        is_regression (`bool`): real-valued outputs (averaged as they are).

    Returns:
        `torch.Tensor` in float32, of the same shape.
    """
    if len(logits) != len(weights):
        raise ValueError(f"{len(logits)} teachers' logits but {len(weights)} weights")
    if is_regression:
        return sum(w * z.float() for w, z in zip(weights, logits))
    log_p = torch.stack(
        [torch.log_softmax(z.float() / temperature, dim=-1) + math.log(w) for w, z in zip(weights, logits) if w > 0]
    )
    return temperature * torch.logsumexp(log_p, dim=0)


def load_student(
    path: str | os.PathLike, teacher_model, args
) -> tuple[PreTrainedModel, PreTrainedModel | str | list | None]:
    """The student at `path` (a folder or Hub id), loaded with the auto class of the teacher's task, and the teachers
    with the first one loaded (so that it is not loaded twice). A base model (no head, or a head whose labels are the
    placeholders `LABEL_0`, ...) gets the teacher's labels, so that its new head predicts the teacher's classes.
    With only a teacher cache, the student's own head decides."""
    check_model_path(str(path), "student")
    teachers = teacher_model if teacher_model is not None else (args.teacher_paths or None)
    listed = isinstance(teachers, (list, tuple))
    first = teachers[0] if listed else teachers
    if isinstance(first, (str, os.PathLike)):
        first = load_model(str(first), None, args.teacher_model_init_kwargs)
    if first is None:
        return load_model(str(path), None, role="student"), teacher_model
    init_kwargs = student_label_kwargs(str(path), first)
    student = load_model(str(path), first, init_kwargs, role="student")
    return student, [first, *teachers[1:]] if listed else first


def student_label_kwargs(path: str, teacher: PreTrainedModel) -> dict:
    """The teacher's labels for a student whose config has none of its own (placeholders), for labelled tasks."""
    if not task_for(teacher).labelled_outputs:
        return {}
    config = AutoConfig.from_pretrained(path)
    if not is_default_id2label(getattr(config, "id2label", None)):
        return {}  # its own labels: check_compatibility compares them with the teacher's
    id2label = {int(i): name for i, name in (teacher.config.id2label or {}).items()}
    kwargs = {
        "num_labels": teacher.config.num_labels,
        "id2label": id2label,
        "label2id": {name: i for i, name in id2label.items()},
    }
    if teacher.config.problem_type is not None:
        kwargs["problem_type"] = teacher.config.problem_type
    return kwargs
