"""Each task's soft-target and task losses, against naive references written with loops, and short trainings."""

import functools
import math

import pytest
import torch
from conftest import tiny_tokenizer
from datasets import load_dataset
from tiny_task_models import (
    MASK_ID,
    VOCAB_SIZE,
    gpt2,
    llama,
    masked_lm,
    pad_batch,
    question_answerer,
    random_task_rows,
    regressor,
    token_classifier,
    write_corpus,
)
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BartConfig,
    BartForConditionalGeneration,
    Trainer,
    TrainingArguments,
)

from hf_distill import DistillationConfig, DistillationTrainer, build_student
from hf_distill.losses import soft_target_kl
from hf_distill.task_data import LanguageModelingCollator, mask_once
from hf_distill.tasks import CausalLM, MaskedLM, QuestionAnswering, TokenClassification, task_for

TEMPERATURE = 2.0


pytestmark = pytest.mark.usefixtures("one_thread")


# name -> (model builder, the auto class that must reload the student)
TASKS = {
    "token-classification": (token_classifier, AutoModelForTokenClassification),
    "question-answering": (question_answerer, AutoModelForQuestionAnswering),
    "masked-lm": (masked_lm, AutoModelForMaskedLM),
    "causal-lm-gpt2": (gpt2, AutoModelForCausalLM),
    "causal-lm-llama": (llama, AutoModelForCausalLM),
    "regression": (regressor, AutoModelForSequenceClassification),
}


def rows_task(name):
    return "causal-lm" if name.startswith("causal-lm") else name


def make_trainer(tmp_path, student, teacher, rows, pad_to=None, **overrides):
    settings = {
        "output_dir": str(tmp_path / "out"),
        "report_to": "none",
        "use_cpu": True,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        "disable_tqdm": True,
        "temperature": TEMPERATURE,
        "kd_weight": 1.0,
        "label_weight": 1.0,
        **overrides,
    }
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=DistillationConfig(**settings),
        train_dataset=rows,
        eval_dataset=rows,
        data_collator=functools.partial(pad_batch, pad_to=pad_to),
    )


# ---- naive references: one example at a time, no padding, plain Python arithmetic ---------------------------------


def log_softmax(values):
    top = max(values)
    log_sum = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - log_sum for v in values]


def naive_kl(student, teacher, temperature):
    log_p_s = log_softmax([v / temperature for v in student])
    log_p_t = log_softmax([v / temperature for v in teacher])
    return temperature**2 * sum(math.exp(t) * (t - s) for s, t in zip(log_p_s, log_p_t))


def naive_ce(logits, label):
    return -log_softmax(logits)[label]


def naive_mse(student, teacher):
    return sum((s - t) ** 2 for s, t in zip(student, teacher)) / len(student)


def single_outputs(model, row):
    inputs = {k: torch.tensor([row[k]]) for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        return model.eval()(**inputs)


def naive_losses(task, student, teacher, rows, temperature=TEMPERATURE):
    """(soft-target KL, task loss, logit MSE) of the whole set: per-item sums over all rows / the item count."""
    kd = task_loss = mse = 0.0
    items = 0
    for row in rows:
        s, t = single_outputs(student, row), single_outputs(teacher, row)
        if task in ("token-classification", "masked-lm"):
            for i, label in enumerate(row["labels"]):
                if label != -100:
                    kd += naive_kl(s.logits[0, i].tolist(), t.logits[0, i].tolist(), temperature)
                    task_loss += naive_ce(s.logits[0, i].tolist(), label)
                    mse += naive_mse(s.logits[0, i].tolist(), t.logits[0, i].tolist())
                    items += 1
        elif task == "causal-lm":
            for i in range(len(row["input_ids"]) - 1):
                if row["labels"][i + 1] != -100:
                    kd += naive_kl(s.logits[0, i].tolist(), t.logits[0, i].tolist(), temperature)
                    task_loss += naive_ce(s.logits[0, i].tolist(), row["labels"][i + 1])
                    mse += naive_mse(s.logits[0, i].tolist(), t.logits[0, i].tolist())
                    items += 1
        elif task == "question-answering":
            for side, position in (("start", row["start_positions"]), ("end", row["end_positions"])):
                s_logits, t_logits = (getattr(o, f"{side}_logits")[0].tolist() for o in (s, t))
                kd += naive_kl(s_logits, t_logits, temperature) / 2
                task_loss += naive_ce(s_logits, position) / 2
                mse += naive_mse(s_logits, t_logits) / 2
            items += 1
        elif task == "regression":
            kd += (s.logits[0, 0].item() - t.logits[0, 0].item()) ** 2
            task_loss += (s.logits[0, 0].item() - row["labels"]) ** 2
            mse += (s.logits[0, 0].item() - t.logits[0, 0].item()) ** 2
            items += 1
    return kd / items, task_loss / items, mse / items


def pair(name, student_hidden=32):
    build, _ = TASKS[name]
    return build(num_layers=2, hidden=student_hidden, seed=1), build(num_layers=4, seed=0)


@pytest.mark.parametrize("name", list(TASKS))
def test_losses_equal_a_naive_reference_whatever_the_padding(tmp_path, name):
    student, teacher = pair(name)
    rows = random_task_rows(rows_task(name), n=10, seed=3)
    expected = naive_losses(rows_task(name), student, teacher, rows)
    for pad_to in (None, 40):  # padding to the longest in each batch of 4, then far beyond it
        trainer = make_trainer(tmp_path, student, teacher, rows, pad_to=pad_to, logit_mse_weight=1.0)
        metrics = trainer.evaluate()
        for term, value in zip(("kd", "label", "logit_mse"), expected):
            assert metrics[f"eval_loss_{term}"] == pytest.approx(value, rel=1e-4), (term, pad_to)


def test_regression_soft_target_is_the_squared_error_whatever_the_temperature(tmp_path):
    student, teacher = pair("regression")
    assert task_for(student).is_regression
    rows = random_task_rows("regression", n=8, seed=2)
    losses = [
        make_trainer(tmp_path, student, teacher, rows, temperature=t).evaluate()["eval_loss_kd"] for t in (1.0, 4.0)
    ]
    assert losses[0] == losses[1] == pytest.approx(naive_losses("regression", student, teacher, rows)[0], rel=1e-4)


def unscored_positions(task_name, batch):
    """(batch, seq_len): the positions whose logits no loss may read: ignored labels and padding."""
    padding = batch["attention_mask"] == 0
    if task_name in ("token-classification", "masked-lm"):
        return batch["labels"] == -100
    if task_name == "causal-lm":  # the logits at i predict the label at i + 1; the last position predicts nothing
        return torch.cat([batch["labels"][:, 1:] == -100, torch.ones_like(padding[:, :1])], dim=1)
    return padding


class Outputs(dict):
    def __getattr__(self, name):
        return self[name]


@pytest.mark.parametrize("name", ["token-classification", "question-answering", "masked-lm", "causal-lm"])
def test_ignored_labels_and_padding_change_nothing(name):
    """Any logits at ignored or padded positions give the same losses, each the mean over the scored items."""
    rows = random_task_rows(name, n=6, seed=4)
    batch = pad_batch(rows)
    task = {
        "token-classification": TokenClassification(),
        "question-answering": QuestionAnswering(),
        "masked-lm": MaskedLM(),
        "causal-lm": CausalLM(),
    }[name]
    shape = (*batch["input_ids"].shape, VOCAB_SIZE)
    keys = ("start_logits", "end_logits") if name == "question-answering" else ("logits",)
    torch.manual_seed(0)
    student = Outputs({k: torch.randn(shape[:2] if "_" in k else shape) for k in keys})
    teacher = Outputs({k: torch.randn_like(v) for k, v in student.items()})
    unscored = unscored_positions(name, batch)

    def noisy(outputs):
        return Outputs(
            {
                k: torch.where(unscored if v.dim() == 2 else unscored[..., None], 1e3 * torch.randn_like(v), v)
                for k, v in outputs.items()
            }
        )

    def loss_terms(s, t):
        counts = task.count_items(batch)
        kd = sum(
            soft_target_kl(x.student, x.teacher, TEMPERATURE, x.mask, counts[x.unit])
            for x in task.logit_targets(s, t, batch)
        )
        return kd, task.label_loss(s, batch, counts)[0]

    clean = loss_terms(student, teacher)
    torch.testing.assert_close(loss_terms(noisy(student), noisy(teacher)), clean)
    # The count is the number of scored items, so the loss is their mean.
    scored = (~unscored).sum() if name != "question-answering" else len(rows)
    unit = task.logit_targets(student, teacher, batch)[0].unit
    assert task.count_items(batch)[unit] == scored


def test_causal_lm_counts_and_masks_the_shifted_targets():
    task = CausalLM()
    batch = {
        "input_ids": torch.tensor([[2, 7, 8, 9], [2, 7, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
    }
    # Without labels: targets are the real tokens after the first: 3 + 1.
    assert task.count_items(batch)["labels"] == 4
    batch["labels"] = torch.tensor([[-100, -100, 8, 9], [2, 7, -100, -100]])
    # With labels: labels[:, 1:] != -100: positions predicting 8, 9 and 7.
    counts = task.count_items(batch)
    assert counts["labels"] == 3 and counts["tokens"] == 6 and counts["examples"] == 2
    logits = torch.zeros(2, 4, 11)
    (target,) = task.logit_targets(Outputs(logits=logits), Outputs(logits=logits), batch)
    assert target.student.shape == (2, 3, 11) and target.unit == "labels"
    assert target.mask.tolist() == [[False, True, True], [True, False, False]]


def test_question_answering_labels_and_predictions():
    task = QuestionAnswering()
    assert task.label_names == ("start_positions", "end_positions")
    assert task.labels({"input_ids": torch.zeros(1, 3)}) is None
    start, end = torch.tensor([1]), torch.tensor([2])
    assert task.labels({"start_positions": start, "end_positions": end}) == (start, end)


# ---- gradient accumulation: the same update as one big batch ------------------------------------------------------


def one_sgd_step(tmp_path, name, batch_size, accumulation):
    build, _ = TASKS[name]
    teacher = build(num_layers=4, seed=0)
    student = build(num_layers=2, hidden=16, seed=1)  # another width: the hidden loss goes through projections
    rows = random_task_rows(rows_task(name), n=8, seed=5, min_len=2, max_len=16)
    trainer = make_trainer(
        tmp_path / f"{batch_size}x{accumulation}",
        student,
        teacher,
        rows,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        logit_mse_weight=0.3,
        hidden_weight=2.0,
    )
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    return {k: before[k] - v.detach() for k, v in trainer.model.named_parameters()}


@pytest.mark.parametrize(
    "name", ["token-classification", "question-answering", "masked-lm", "causal-lm-gpt2", "causal-lm-llama"]
)
def test_gradient_accumulation_gives_the_gradient_of_one_big_batch(tmp_path, name):
    big = one_sgd_step(tmp_path, name, batch_size=8, accumulation=1)
    accumulated = one_sgd_step(tmp_path, name, batch_size=4, accumulation=2)
    assert sum(d.abs().sum().item() for d in big.values()) > 1e-3
    for key in big:
        torch.testing.assert_close(accumulated[key], big[key], rtol=1e-4, atol=1e-6, msg=key)


# ---- short training: the distillation loss falls, the student reloads as its auto class ----------------------------


@pytest.mark.parametrize("name", list(TASKS))
def test_training_lowers_the_distillation_loss_and_the_student_reloads(tmp_path, name):
    _, auto_class = TASKS[name]
    student, teacher = pair(name)
    rows = random_task_rows(rows_task(name), n=16, seed=6)
    trainer = make_trainer(tmp_path, student, teacher, rows, max_steps=12, learning_rate=3e-3, label_weight=0.0)
    before = trainer.evaluate()["eval_loss_kd"]
    trainer.train()
    after = trainer.evaluate()["eval_loss_kd"]
    assert after < 0.8 * before, (before, after)

    trainer.save_model(str(tmp_path / "student"))
    reloaded = auto_class.from_pretrained(tmp_path / "student")
    assert type(reloaded) is type(student) and reloaded.config.num_hidden_layers == 2
    for key, value in trainer.student.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0, msg=key)


# ---- wrong pairings ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_pair, message",
    [
        (
            lambda: (regressor(4), token_classifier(2)),
            "the teacher is a BertForSequenceClassification .*sequence-classification.* but the student is a "
            "BertForTokenClassification",
        ),
        (lambda: (question_answerer(4), masked_lm(2)), "the teacher is a BertForQuestionAnswering"),
        (lambda: (gpt2(4), masked_lm(2)), r"GPT2LMHeadModel \(causal-lm\)"),
        (lambda: (masked_lm(4), masked_lm(2, vocab_size=120)), "vocabulary size differs: teacher 99, student 120"),
        (lambda: (gpt2(4), llama(2, vocab_size=120)), "vocabulary size differs: teacher 99, student 120"),
        (lambda: (token_classifier(4), token_classifier(2, num_labels=3)), "number of labels differs"),
        (
            lambda: (masked_lm(4), BartForConditionalGeneration(BartConfig(vocab_size=99, d_model=16))),
            "BartForConditionalGeneration has a head that hf_distill cannot distil yet",
        ),
    ],
)
def test_wrong_pairings_fail_with_a_clear_message(tmp_path, make_pair, message):
    teacher, student = make_pair()
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, student, teacher, random_task_rows("masked-lm", n=2))


def test_output_vocabulary_mismatch_is_named(tmp_path):
    teacher, student = gpt2(4), gpt2(2)
    student.lm_head = torch.nn.Linear(32, 120, bias=False)  # same input vocabulary, other output vocabulary
    with pytest.raises(ValueError, match="the teacher predicts over 99 tokens, the student over 120"):
        make_trainer(tmp_path, student, teacher, random_task_rows("causal-lm", n=2))


def test_masked_lm_rows_mask_something():
    for row in random_task_rows("masked-lm", n=5):
        assert MASK_ID in row["input_ids"] or any(label != -100 for label in row["labels"])


# ---- a general student on plain text: masked and causal LM agreement with the teacher rises ------------------------


def corpus_splits(tmp_path, tokenizer, mlm):
    """A local text file, tokenised line by line: training rows, and evaluation rows (masked once for MLM)."""
    path = write_corpus(tmp_path / "corpus.txt", 800, seed=0)
    raw = load_dataset("text", data_files={"train": str(path)})["train"].train_test_split(test_size=0.2, seed=0)
    encoded = raw.map(
        lambda batch: tokenizer(batch["text"], return_special_tokens_mask=mlm), batched=True, remove_columns=["text"]
    )
    evaluation = mask_once(encoded["test"], tokenizer, seed=0) if mlm else encoded["test"]
    return encoded["train"], evaluation


def pretrain(model, rows, collator, tmp_path, steps=150):
    """Makes the tiny teacher a real (tiny) language model of the corpus, with the plain transformers Trainer."""
    args = TrainingArguments(
        str(tmp_path / "teacher"),
        max_steps=steps,
        per_device_train_batch_size=32,
        learning_rate=5e-3,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        seed=0,
    )
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
    return model


def distil_and_measure(tmp_path, teacher, train_rows, eval_rows, collator, **settings):
    student = build_student(teacher, num_layers=2, strategy="every_other")
    config = DistillationConfig(
        str(tmp_path / "student"),
        max_steps=100,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        temperature=2.0,
        seed=0,
        **settings,
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=config,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=collator,
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    print(
        f"{type(teacher).__name__}: teacher agreement {before['eval_teacher_agreement']:.3f} -> "
        f"{after['eval_teacher_agreement']:.3f}, KL {before['eval_teacher_kl']:.4f} -> {after['eval_teacher_kl']:.4f}"
    )
    return before, after


def test_masked_lm_distils_a_half_depth_student_on_a_text_file(tmp_path):
    """DistilBERT's triple loss: soft targets at the masked positions, the MLM loss, cosine on the last states."""
    tokenizer = tiny_tokenizer()
    train_rows, eval_rows = corpus_splits(tmp_path, tokenizer, mlm=True)
    collator = LanguageModelingCollator(tokenizer, mlm=True)
    teacher = pretrain(masked_lm(num_layers=4, vocab_size=len(tokenizer)), train_rows, collator, tmp_path)
    before, after = distil_and_measure(
        tmp_path,
        teacher,
        train_rows,
        eval_rows,
        collator,
        kd_weight=5.0,
        label_weight=2.0,
        hidden_weight=1.0,
        hidden_loss_type="cosine",
        layer_map="4:2",
    )
    assert after["eval_teacher_agreement"] > before["eval_teacher_agreement"]
    assert after["eval_teacher_kl"] < 0.5 * before["eval_teacher_kl"]
    assert after["eval_loss_hidden"] < before["eval_loss_hidden"]


@pytest.mark.parametrize("build", [gpt2, llama], ids=["gpt2", "llama"])
def test_causal_lm_distils_a_half_depth_student_on_a_text_file(tmp_path, build):
    tokenizer = tiny_tokenizer()
    train_rows, eval_rows = corpus_splits(tmp_path, tokenizer, mlm=False)
    collator = LanguageModelingCollator(tokenizer, mlm=False)
    teacher = pretrain(build(num_layers=4, vocab_size=len(tokenizer)), train_rows, collator, tmp_path)
    before, after = distil_and_measure(
        tmp_path, teacher, train_rows, eval_rows, collator, kd_weight=1.0, label_weight=0.5
    )
    assert after["eval_teacher_agreement"] > before["eval_teacher_agreement"]
    assert after["eval_teacher_kl"] < 0.5 * before["eval_teacher_kl"]
