"""Padded vocabularies (the Qwen case: 151,936 and 152,064 rows for one tokenizer): a teacher whose embedding and
output matrices have padding rows beyond the shared tokenizer distils into a student without them, compared over the
tokenizer's tokens; any other vocabulary mismatch is a one-line error naming both sizes."""

import copy

import pytest
import torch
from datasets import Dataset
from tiny_task_models import VOCAB_SIZE, gpt2, llama, make_config, pad_batch, random_task_rows, tiny_tokenizer

from hf_distill import CacheArguments, DistillationTrainer, build_teacher_cache, losses

pytestmark = pytest.mark.usefixtures("one_thread")

PADDED = VOCAB_SIZE + 29  # the teacher's rows: the tokenizer's 99 tokens and 29 rows no token id reaches


def tokenizer():
    """A tokenizer of exactly VOCAB_SIZE tokens: the ids of `random_task_rows`."""
    made = tiny_tokenizer([f"w{i}" for i in range(VOCAB_SIZE - 5)])
    assert len(made) == VOCAB_SIZE
    return made


def trainer_for(tmp_path, teacher, student, rows, tokenizer=None, **settings):
    settings = {"kd_weight": 1.0, "label_weight": 0.5, "temperature": 2.0, "max_steps": 2, **settings}
    return DistillationTrainer(
        model=student,
        teacher_model=teacher if "teacher_cache" not in settings else None,
        args=make_config(tmp_path, **settings),
        train_dataset=rows,
        data_collator=pad_batch,
        processing_class=tokenizer,
    )


@pytest.mark.parametrize("family", [llama, gpt2], ids=["llama", "gpt2"])
def test_a_padded_teacher_distils_over_the_tokenizers_vocabulary(tmp_path, family):
    teacher, student = family(num_layers=2, seed=0, vocab_size=PADDED), family(num_layers=1, seed=1)
    with torch.no_grad():  # the padding rows get real mass, so that leaving them in would show
        teacher.get_output_embeddings().weight[VOCAB_SIZE:] *= 20
    rows = Dataset.from_list(random_task_rows("causal-lm", n=8, seed=2))
    before = copy.deepcopy(student)
    trainer = trainer_for(tmp_path, teacher, student, rows, tokenizer())
    assert trainer.task.compared_vocabulary == VOCAB_SIZE
    trainer.train()
    logged = [entry["loss_kd"] for entry in trainer.state.log_history if "loss_kd" in entry]
    batch = pad_batch([rows[i] for i in range(8)])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        s, t = before(**inputs).logits, teacher(**inputs).logits
    assert t.shape[-1] == PADDED and s.shape[-1] == VOCAB_SIZE
    mask = batch["labels"][:, 1:] != -100
    expected = losses.soft_target_kl(s[:, :-1], t[:, :-1, :VOCAB_SIZE], 2.0, mask)
    assert logged[0] == pytest.approx(expected.item(), rel=1e-4)
    assert logged[-1] < logged[0]


def test_equal_widths_are_compared_whole(tmp_path):
    teacher, student = llama(num_layers=2, seed=0, vocab_size=PADDED), llama(num_layers=1, seed=1, vocab_size=PADDED)
    rows = Dataset.from_list(random_task_rows("causal-lm", n=2))
    assert trainer_for(tmp_path, teacher, student, rows, tokenizer()).task.compared_vocabulary is None


@pytest.mark.parametrize(
    "student_rows, give_tokenizer, message",
    [
        (VOCAB_SIZE - 9, True, rf"teacher {PADDED}, student 90 \(the tokenizer has {VOCAB_SIZE} tokens\)"),
        (VOCAB_SIZE, False, rf"vocabulary size differs: teacher {PADDED}, student {VOCAB_SIZE}\. "),
    ],
    ids=["narrower-than-the-tokenizer", "no-tokenizer"],
)
def test_a_real_mismatch_is_an_error_naming_both_sizes(tmp_path, student_rows, give_tokenizer, message):
    teacher, student = llama(num_layers=2, seed=0, vocab_size=PADDED), llama(1, seed=1, vocab_size=student_rows)
    rows = Dataset.from_list(random_task_rows("causal-lm", n=2))
    with pytest.raises(ValueError, match=message) as error:
        trainer_for(tmp_path, teacher, student, rows, tokenizer() if give_tokenizer else None)
    assert "\n" not in str(error.value)


def test_an_output_width_narrower_than_the_tokenizer_is_an_error(tmp_path):
    teacher, student = llama(num_layers=2, seed=0, vocab_size=PADDED), llama(num_layers=1, seed=1, vocab_size=PADDED)
    student.lm_head = torch.nn.Linear(32, VOCAB_SIZE - 3, bias=False)  # reads every token, cannot predict them all
    with pytest.raises(ValueError, match=f"the teacher predicts over {PADDED} tokens, the student over 96 "):
        trainer_for(tmp_path, teacher, student, Dataset.from_list(random_task_rows("causal-lm", n=2)), tokenizer())


def test_a_cache_of_a_padded_teacher(tmp_path):
    """All logits stored: served over the tokenizer's vocabulary, as the live teacher is. Top-k: the ranking over
    the padding rows cannot be cut to the tokenizer's, so it is refused at start-up."""
    teacher = llama(num_layers=2, seed=0, vocab_size=PADDED)
    rows = Dataset.from_list(random_task_rows("causal-lm", n=8, seed=2))
    logged = []
    for source in ("live", "cache"):
        settings = {}
        if source == "cache":
            path = str(tmp_path / "full")
            build_teacher_cache(teacher, rows, CacheArguments(path), data_collator=pad_batch, progress=False)
            settings["teacher_cache"] = path
        trainer = trainer_for(tmp_path / source, teacher, llama(num_layers=1, seed=1), rows, tokenizer(), **settings)
        trainer.train()
        logged.append([entry["loss_kd"] for entry in trainer.state.log_history if "loss_kd" in entry])
    assert logged[1] == pytest.approx(logged[0], rel=1e-5)
    path = str(tmp_path / "top")
    top = CacheArguments(path, top_k=4)
    build_teacher_cache(teacher, rows, top, data_collator=pad_batch, temperature=2.0, progress=False)
    with pytest.raises(ValueError, match=f"a top-k teacher cache \\(top_k=4\\) ranks the teacher's {PADDED} rows"):
        trainer_for(tmp_path / "top", None, llama(num_layers=1, seed=1), rows, tokenizer(), teacher_cache=path)
