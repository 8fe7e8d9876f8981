"""A student of another tokenizer than its teacher's: each model reads its own tokenization of every example.

Detection (the vocabularies are compared, not their sizes), the paired data and batches, the soft targets of each
task against references computed from each model on its own unpadded tokens, gradient accumulation with uneven
lengths on both sides, the refusals, the same-tokenizer path left exactly as it was, and the command's student folder
(its own tokenizer, its card, `pipeline`)."""

import json

import pytest
import torch
from tiny_task_models import (
    SGD,
    case,
    make_config,
    paired_splits,
    save_cross_pair,
    split_card,
    tiny_tokenizer,
    train_flags,
    trainable_state,
)
from transformers import pipeline

from hf_distill import DistillationTrainer
from hf_distill.cli import main
from hf_distill.cross_tokenizer import PairedCollator
from hf_distill.measure import METRICS_FILE

pytestmark = pytest.mark.usefixtures("one_thread")


def cross_trainer(tmp_path, case_id, splits=None, student_hidden=32, **overrides):
    """A trainer of the case's cross pair (student: words, teacher: word pieces) on its paired data files."""
    task_case = case(case_id)
    student, teacher, student_tokenizer, teacher_tokenizer = task_case.cross_pair(student_hidden)
    if splits is None:
        splits = paired_splits(tmp_path, task_case, student_tokenizer, teacher_tokenizer, teacher)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_config(tmp_path, **overrides),
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=student_tokenizer,
        teacher_processing_class=teacher_tokenizer,
    )
    return trainer, splits


# ---- sequence classification ---------------------------------------------------------------------------------------


def test_each_model_reads_its_own_tokens_and_the_kd_term_is_their_kl(tmp_path):
    """The evaluation's kd term equals the KL between the teacher on its own unpadded tokens and the student on its
    own, example by example: both sides padded with their own tokens, each model fed its own ids."""
    trainer, splits = cross_trainer(tmp_path, "text-classification", per_device_eval_batch_size=4)
    assert isinstance(trainer.data_collator, PairedCollator)
    measured = trainer.evaluate()["eval_loss_kd"]
    temperature, total = trainer.args.temperature, 0.0
    student, teacher = trainer.student.eval(), trainer.teacher
    for row in splits["validation"]:
        with torch.no_grad():
            s = student(input_ids=torch.tensor([row["input_ids"]])).logits / temperature
            t = teacher(input_ids=torch.tensor([row["teacher_input_ids"]])).logits / temperature
        kl = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum()
        total += temperature**2 * kl.item()
    assert measured == pytest.approx(total / len(splits["validation"]), rel=1e-5)


def sgd_update(tmp_path, case_id, batch_size, accumulation, rows=16, **terms):
    """Minus the parameter change of one plain SGD step at lr 1 (the gradient) over the first `rows` paired rows."""
    task_case = case(case_id)
    student, teacher, student_tokenizer, teacher_tokenizer = task_case.cross_pair(student_hidden=16)
    splits = paired_splits(tmp_path, task_case, student_tokenizer, teacher_tokenizer, teacher)
    train = splits["train"].select(range(rows))
    trainer, _ = cross_trainer(
        tmp_path / f"{batch_size}x{accumulation}",
        case_id,
        splits={"train": train, "validation": splits["validation"]},
        student_hidden=16,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        train_sampling_strategy="sequential",
        **terms,
        **SGD,
    )
    before = trainable_state(trainer)
    trainer.train()
    return {k: before[k] - v for k, v in trainable_state(trainer).items()}, train


GA_TERMS = {
    # (not the similarity loss: it relates the examples of one micro-batch, so it depends on the split by design)
    "text-classification": {"kd_weight": 1.0, "label_weight": 0.5, "hidden_weight": 1.0},
}


@pytest.mark.parametrize("case_id", list(GA_TERMS))
def test_accumulated_halves_give_the_update_of_the_whole_batch_across_tokenizers(tmp_path, case_id):
    whole, rows = sgd_update(tmp_path, case_id, 16, 1, **GA_TERMS[case_id])
    halves, _ = sgd_update(tmp_path, case_id, 8, 2, **GA_TERMS[case_id])
    for side in ("input_ids", "teacher_input_ids"):  # uneven halves on both sides
        lengths = [len(ids) for ids in rows[side]]
        assert sum(lengths[:8]) != sum(lengths[8:]) and len(set(lengths)) > 1, side
    assert sum(d.abs().sum().item() for d in whole.values()) > 1e-3
    for key in whole:
        torch.testing.assert_close(halves[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)


# ---- one tokenizer: the path of before -----------------------------------------------------------------------------


def test_the_same_tokenizer_given_twice_takes_the_path_of_before_bit_for_bit(tmp_path, monkeypatch):
    """A teacher tokenizer with the student's vocabulary changes nothing: no paired collator, no alignment, the same
    weights after four steps as a run given one tokenizer."""
    from tiny_task_models import make_trainer, random_classification_dataset, tiny_bert

    def never(*args, **kwargs):
        raise AssertionError("the two-tokenizer path ran for one tokenizer")

    monkeypatch.setattr(PairedCollator, "__call__", never)
    data = random_classification_dataset(32)
    runs = []
    for teacher_tokenizer in (None, tiny_tokenizer()):
        trainer = make_trainer(
            tmp_path / str(teacher_tokenizer is None), tiny_bert(2, seed=1), tiny_bert(4), data, hidden_weight=1.0
        )
        if teacher_tokenizer is not None:  # the same trainer, told the teacher's tokenizer
            trainer = DistillationTrainer(
                model=tiny_bert(2, seed=1),
                teacher_model=tiny_bert(4),
                args=make_config(tmp_path / "given", hidden_weight=1.0),
                train_dataset=data,
                eval_dataset=data,
                data_collator=trainer.data_collator,
                processing_class=tiny_tokenizer(),
                teacher_processing_class=teacher_tokenizer,
            )
            assert trainer.tokenizers is None and not isinstance(trainer.data_collator, PairedCollator)
        trainer.train()
        runs.append(trainer)
    for (name, a), b in zip(runs[0].student.named_parameters(), runs[1].student.parameters()):
        assert torch.equal(a, b), name
    assert runs[0].state.log_history[-2]["loss"] == runs[1].state.log_history[-2]["loss"]


# ---- what cannot cross, refused at start-up ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"attention_weight": 1.0},
            r"^attention_weight > 0 cannot cross tokenizers: it compares attention maps token by token, and the two "
            r"tokenizers' tokens differ \(the student's vocabulary differs from the teacher's: the teacher's has 32 "
            r"tokens, the student's 23 \(13 spelled alike\)\); set attention_weight=0",
        ),
        ({"relation_weight": 1.0}, r"^relation_weight > 0 cannot cross tokenizers: it compares attention relations"),
    ],
)
def test_loss_terms_that_compare_tokens_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        cross_trainer(tmp_path, "text-classification", **overrides)


def test_data_of_one_tokenization_is_refused_naming_the_fix(tmp_path):
    task_case = case("text-classification")
    student, teacher, student_tokenizer, teacher_tokenizer = task_case.cross_pair()
    splits = paired_splits(tmp_path, task_case, student_tokenizer, teacher_tokenizer, teacher)
    one = splits["train"].remove_columns(["teacher_input_ids", "teacher_attention_mask", "teacher_token_type_ids"])
    with pytest.raises(ValueError, match=r"^train_dataset holds only one tokenization \(no teacher_input_ids\), but"):
        cross_trainer(tmp_path, "text-classification", splits={"train": one, "validation": splits["validation"]})


def test_a_teacher_tokenizer_needs_the_students(tmp_path):
    task_case = case("text-classification")
    student, teacher, _, teacher_tokenizer = task_case.cross_pair()
    with pytest.raises(ValueError, match="pass the student's as processing_class too"):
        DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=make_config(tmp_path),
            teacher_processing_class=teacher_tokenizer,
        )


def test_equal_sizes_with_other_tokens_are_detected(tmp_path):
    """A student saved with a tokenizer of the teacher's size but other ids: given the teacher's tokenizer alone, it
    would read ids it was not trained on; the trainer refuses it, and given both it takes the two-tokenizer path."""
    from tiny_task_models import CORE_WORDS, random_classification_dataset, tiny_bert

    teacher_tokenizer, shuffled = tiny_tokenizer(), tiny_tokenizer(list(reversed(CORE_WORDS)))
    assert len(shuffled) == len(teacher_tokenizer)
    tiny_bert(2, seed=1, vocab_size=len(shuffled)).save_pretrained(tmp_path / "student")
    shuffled.save_pretrained(tmp_path / "student")
    from transformers import AutoModelForSequenceClassification

    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    teacher = tiny_bert(4, vocab_size=len(teacher_tokenizer))
    with pytest.raises(
        ValueError,
        match=r"^the student '.*student' has a tokenizer of its own whose vocabulary "
        r"differs from processing_class's \(both have 23 tokens, but 18 differ: 'good' is id 5",
    ):
        DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=make_config(tmp_path),
            train_dataset=random_classification_dataset(8),
            processing_class=teacher_tokenizer,
        )
    with pytest.raises(ValueError, match="train_dataset holds only one tokenization"):  # the two-tokenizer path
        DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=make_config(tmp_path),
            train_dataset=random_classification_dataset(8),
            processing_class=shuffled,
            teacher_processing_class=teacher_tokenizer,
        )


# ---- the command: a pretrained student of another family ---------------------------------------------------------


def test_a_pretrained_student_with_its_own_tokenizer_through_the_command(tmp_path):
    """`--student_model_name_or_path` of a base model with another tokenizer: the student gets the teacher's labels,
    learns through its own tokens, is saved with its own tokenizer, `pipeline` reads that one, and the card names
    both tokenizers, the alignment and the losses."""
    task_case = case("text-classification")
    teacher, pretrained = save_cross_pair(tmp_path, task_case)
    flags = train_flags(tmp_path, teacher, task_case)
    main(["train", *flags, "--student_model_name_or_path", str(pretrained), "--hidden_weight", "1"])
    folder = tmp_path / "student"

    student_vocabulary = tiny_tokenizer().get_vocab()
    classifier = pipeline("text-classification", model=str(folder))
    assert classifier.tokenizer.get_vocab() == student_vocabulary
    text = "the movie was very good"
    with torch.no_grad():
        logits = classifier.model(**tiny_tokenizer()(text, return_tensors="pt")).logits[0]
    assert classifier(text)[0]["label"] == classifier.model.config.id2label[int(logits.argmax())]
    assert classifier.model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}

    metrics = json.loads((folder / METRICS_FILE).read_text())
    assert metrics["distillation"]["tokenizers"] == {
        "teacher": "teacher",
        "teacher_tokens": 32,
        "student": "pretrained-student",
        "student_tokens": 23,
        "alignment": "one prediction per example over the same labels, so the soft targets need no alignment",
    }
    assert 0 <= metrics["teacher"]["accuracy"] <= 1  # measured on its own tokenization of the test examples
    _, body = split_card((folder / "README.md").read_text())
    assert (
        "- **Tokenizers:** the teacher reads `teacher` (32 tokens), the student its own, `pretrained-student` (23 "
        "tokens), saved with it; one prediction per example over the same labels, so the soft targets need no "
        "alignment." in body
    )
    assert "between each example's hidden states averaged over its own tokens (two tokenizers" in body
