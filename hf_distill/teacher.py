"""Loading the teacher, and checking up front that it and the student can be distilled together."""

from __future__ import annotations

from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, PreTrainedModel
from transformers.utils import logging

from .tasks import Task, task_name_of

logger = logging.get_logger(__name__)

_AUTO_CLASSES = {
    "sequence-classification": AutoModelForSequenceClassification,
    "token-classification": AutoModelForTokenClassification,
}


def load_teacher(name_or_path: str, student: PreTrainedModel, init_kwargs: dict | None = None) -> PreTrainedModel:
    """Loads the teacher with the auto class of the student's task (a sequence classifier for a sequence classifier).

    Raises:
        `OSError`: naming the path or id when it cannot be loaded.
    """
    task = task_name_of(student)
    auto_class = _AUTO_CLASSES.get(task)
    if auto_class is None:
        raise ValueError(
            f"cannot load a teacher for a {type(student).__name__} student; pass the teacher model object"
        )
    try:
        return auto_class.from_pretrained(name_or_path, **(init_kwargs or {}))
    except (OSError, ValueError) as error:
        raise OSError(
            f"could not load the teacher {name_or_path!r} ({error.__class__.__name__}: {str(error).splitlines()[0]}). "
            "Give a folder written by save_pretrained, or a Hub id reachable from this machine"
        ) from error


def check_compatibility(teacher: PreTrainedModel, student: PreTrainedModel, task: Task) -> None:
    """Fails with a message saying what differs, and how to fix it, if teacher and student cannot be distilled.

    They must have the same kind of head, read the same token ids (same vocabulary), and, for classification,
    predict the same labels in the same order.
    """
    teacher_task = task_name_of(teacher)
    if teacher_task != task.name:
        raise ValueError(
            f"the teacher is a {type(teacher).__name__} ({teacher_task or 'no supported head'}) but the student is a "
            f"{type(student).__name__} ({task.name}); distil between models with the same kind of head"
        )
    teacher_vocab, student_vocab = _vocab_size(teacher), _vocab_size(student)
    if teacher_vocab != student_vocab:
        raise ValueError(
            f"vocabulary size differs: teacher {teacher_vocab}, student {student_vocab}. Teacher and student read the "
            "same input ids, so they must share a tokenizer; build the student from the teacher with build_student()"
        )
    teacher_labels, student_labels = teacher.config.num_labels, student.config.num_labels
    if teacher_labels != student_labels:
        raise ValueError(
            f"number of labels differs: teacher num_labels={teacher_labels}, student num_labels={student_labels}; "
            f"give the student num_labels={teacher_labels} and the teacher's id2label"
        )
    t_id2label, s_id2label = _names(teacher.config.id2label), _names(student.config.id2label)
    if _is_default(s_id2label) and not _is_default(t_id2label):
        logger.info(f"The student has no label names; using the teacher's: {t_id2label}")
        student.config.id2label = dict(teacher.config.id2label)
        student.config.label2id = dict(teacher.config.label2id)
    elif not _is_default(s_id2label) and not _is_default(t_id2label) and s_id2label != t_id2label:
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


def _names(id2label: dict) -> dict[int, str]:
    return {int(k): str(v) for k, v in id2label.items()}


def _is_default(id2label: dict[int, str]) -> bool:
    return all(name == f"LABEL_{i}" for i, name in id2label.items())
