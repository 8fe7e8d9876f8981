"""Each task, through the one table of task cases: its losses against naive references written with loops, its
data, collator and metrics, short trainings, and the registry that holds the tasks."""

import dataclasses
import functools
import math
import typing

import pytest
import torch
from datasets import load_dataset
from tiny_task_models import (
    ALL_TERMS,
    CASE_IDS,
    CASES,
    SGD,
    VOCAB_SIZE,
    case,
    gpt2,
    llama,
    masked_lm,
    pad_batch,
    question_answerer,
    random_task_rows,
    regressor,
    tiny_tokenizer,
    token_classifier,
    trainable_state,
    write_corpus,
    write_task_file,
)
from tiny_task_models import make_trainer as shared_trainer
from transformers import BartConfig, BartForConditionalGeneration, Trainer, TrainingArguments

from hf_distill import DistillationConfig, DistillationTrainer, build_student
from hf_distill.data import DataArguments, load_raw_datasets
from hf_distill.data_settings import DataSettings
from hf_distill.losses import soft_target_kl
from hf_distill.tasks import (
    TASKS,
    CardMetric,
    CausalLM,
    MaskedLM,
    QuestionAnswering,
    Task,
    TokenClassification,
    get_task,
    register_task,
    task_for,
    task_name_of,
    task_name_of_class,
)
from hf_distill.tasks.language_modeling import LanguageModelingCollator, mask_once

TEMPERATURE = 2.0


pytestmark = pytest.mark.usefixtures("one_thread")


def make_trainer(tmp_path, student, teacher, rows, pad_to=None, **overrides):
    """The shared trainer, in batches of 4 padded by `pad_batch` (to `pad_to` if given), with soft and hard labels."""
    settings = {
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "max_steps": 2,
        "temperature": TEMPERATURE,
        "kd_weight": 1.0,
        "label_weight": 1.0,
        **overrides,
    }
    collator = functools.partial(pad_batch, pad_to=pad_to)
    return shared_trainer(tmp_path, student, teacher, rows, data_collator=collator, **settings)


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
    """(soft-target KL, label loss, logit MSE) of the whole set: per-item sums over all rows / the item count."""
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
        elif task == "sequence-classification":
            s_logits, t_logits = s.logits[0].tolist(), t.logits[0].tolist()
            kd += naive_kl(s_logits, t_logits, temperature)
            task_loss += naive_ce(s_logits, row["labels"])
            mse += naive_mse(s_logits, t_logits)
            items += 1
        elif task == "regression":
            kd += (s.logits[0, 0].item() - t.logits[0, 0].item()) ** 2
            task_loss += (s.logits[0, 0].item() - row["labels"]) ** 2
            mse += (s.logits[0, 0].item() - t.logits[0, 0].item()) ** 2
            items += 1
    return kd / items, task_loss / items, mse / items


def label_term(metrics):
    """The hard-label loss term of an evaluation, under its new name or the one it had before the terms registry."""
    return metrics["eval_loss_label"] if "eval_loss_label" in metrics else metrics["eval_loss_task"]


@pytest.mark.parametrize("task_case", CASES, ids=CASE_IDS)
def test_losses_equal_a_naive_reference_whatever_the_padding(tmp_path, task_case):
    student, teacher = task_case.pair()
    rows = random_task_rows(task_case.rows, n=10, seed=3)
    expected = naive_losses(task_case.rows, student, teacher, rows)
    for pad_to in (None, 40):  # padding to the longest in each batch of 4, then far beyond it
        trainer = make_trainer(tmp_path, student, teacher, rows, pad_to=pad_to, logit_mse_weight=1.0)
        metrics = trainer.evaluate()
        found = (metrics["eval_loss_kd"], label_term(metrics), metrics["eval_loss_logit_mse"])
        for term, value, reference in zip(("kd", "label", "logit_mse"), found, expected):
            assert value == pytest.approx(reference, rel=1e-4), (term, pad_to)


def test_regression_soft_target_is_the_squared_error_whatever_the_temperature(tmp_path):
    student, teacher = case("regression").pair()
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
    task = get_task(name)()
    shape = (*batch["input_ids"].shape, VOCAB_SIZE)
    keys = task.logit_fields
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
    # The logits whole; the last position predicts nothing and is masked out.
    assert target.student.shape == (2, 4, 11) and target.unit == "labels"
    assert target.mask.tolist() == [[False, True, True, False], [True, False, False, False]]


def test_question_answering_labels_and_predictions():
    task = QuestionAnswering()
    assert task.label_names == ("start_positions", "end_positions")
    assert task.labels({"input_ids": torch.zeros(1, 3)}) is None
    start, end = torch.tensor([1]), torch.tensor([2])
    assert task.labels({"start_positions": start, "end_positions": end}) == (start, end)


# ---- gradient accumulation: the same update as one big batch ------------------------------------------------------


def one_sgd_step(tmp_path, task_case, batch_size, accumulation):
    """The parameter change of one plain SGD step at lr 1 (minus its gradient), and the trainer."""
    teacher = task_case.build(num_layers=4, seed=0)
    student = task_case.build(
        num_layers=2, hidden=16, seed=1
    )  # another width: the hidden loss goes through projections
    rows = random_task_rows(task_case.rows, n=8, seed=5, min_len=2, max_len=16)
    trainer = make_trainer(
        tmp_path / f"{batch_size}x{accumulation}",
        student,
        teacher,
        rows,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        **SGD,
        **ALL_TERMS,
    )
    before = trainable_state(trainer)
    trainer.train()
    return {k: before[k] - v for k, v in trainable_state(trainer).items()}, trainer


@pytest.mark.parametrize("task_case", CASES, ids=CASE_IDS)
def test_gradient_accumulation_gives_the_gradient_of_one_big_batch(tmp_path, task_case):
    """Every term on (kd, label, logit MSE, hidden states through projections, attention maps), batches of uneven
    token counts: two accumulated halves give the update of the whole batch. (Also replaces test_trainer's copy.)"""
    big, trainer = one_sgd_step(tmp_path, task_case, batch_size=8, accumulation=1)
    accumulated, _ = one_sgd_step(tmp_path, task_case, batch_size=4, accumulation=2)
    logged = {key for key in trainer.state.log_history[0] if key.startswith("loss_")}
    assert logged == {f"loss_{name.removesuffix('_weight')}" for name in ALL_TERMS}
    assert any(k.startswith("projections.") for k in big)
    assert sum(d.abs().sum().item() for d in big.values()) > 1e-3  # a real gradient, not zeros
    for key in big:
        torch.testing.assert_close(accumulated[key], big[key], rtol=1e-4, atol=1e-6, msg=key)


# ---- short training: the distillation loss falls, the student reloads as its auto class ----------------------------


@pytest.mark.parametrize("task_case", CASES, ids=CASE_IDS)
def test_training_lowers_the_distillation_loss_and_the_student_reloads(tmp_path, task_case):
    student, teacher = task_case.pair()
    rows = random_task_rows(task_case.rows, n=16, seed=6)
    trainer = make_trainer(tmp_path, student, teacher, rows, max_steps=12, learning_rate=3e-3, label_weight=0.0)
    before = trainer.evaluate()["eval_loss_kd"]
    trainer.train()
    after = trainer.evaluate()["eval_loss_kd"]
    assert after < 0.8 * before, (before, after)

    trainer.save_model(str(tmp_path / "student"))
    reloaded = get_task(task_case.task).auto_class.from_pretrained(tmp_path / "student")
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


# ---- what each task owns: data files -> tokenised splits -> batches -> its metrics and card rows --------------------


@pytest.mark.parametrize("task_case", CASES, ids=CASE_IDS)
def test_each_task_prepares_its_data_and_scores_its_own_metrics(tmp_path, task_case):
    tokenizer = tiny_tokenizer()
    teacher = task_case.build(num_layers=2, vocab_size=len(tokenizer))
    task = task_for(teacher)
    assert task.name == task_case.task and task.is_regression == task_case.is_regression
    assert isinstance(task, get_task(task.pipeline_tag))

    data_args = DataArguments(
        train_file=str(write_task_file(task_case.id, tmp_path / "train.jsonl", 24, seed=0)),
        validation_file=str(write_task_file(task_case.id, tmp_path / "validation.jsonl", 10, seed=1)),
        max_length=24,
    )
    raw = load_raw_datasets(data_args)
    tokenized = task.prepare_datasets(raw, tokenizer, data_args, None, teacher.config)
    assert list(tokenized) == ["train", "validation"]
    assert tokenized["train"].num_rows == 24
    assert set(task.label_names) <= set(tokenized["validation"].column_names) or task.vocabulary_outputs

    evaluation = task.evaluation(tokenized["validation"], teacher.config)
    args = TrainingArguments(str(tmp_path / "eval"), use_cpu=True, report_to="none", per_device_eval_batch_size=4)
    trainer = Trainer(
        model=teacher,
        args=args,
        data_collator=task.data_collator(tokenizer),
        compute_metrics=evaluation.compute_metrics,
        preprocess_logits_for_metrics=evaluation.preprocess_logits_for_metrics,
    )
    metrics = trainer.evaluate(tokenized["validation"])
    for key in task_case.metric_keys:
        assert math.isfinite(metrics[f"eval_{key}"]) or key == "pearson", (key, metrics)

    # The card shows the task's own metrics, headline first, each one that evaluation reports.
    rows = task.card_metrics
    assert rows and all(isinstance(row, CardMetric) for row in rows)
    assert [row.key for row in rows] == list(task_case.card_keys)
    assert {row.key for row in rows} <= set(task_case.metric_keys)


def test_lower_is_better_metrics_are_plain_numbers():
    for name in ("masked-lm", "causal-lm"):
        perplexity = get_task(name).card_metrics[0]
        assert (perplexity.key, perplexity.percent, perplexity.higher_is_better) == ("perplexity", False, False)
    mse = task_for(regressor(2)).card_metrics[0]
    assert (mse.key, mse.model_index_type, mse.percent, mse.higher_is_better) == ("mse", "mse", False, False)


def test_the_unlabeled_split_of_a_language_model_is_more_training_text(tmp_path):
    tokenizer = tiny_tokenizer()
    data_args = DataArguments(
        train_file=str(write_task_file("masked-lm", tmp_path / "train.jsonl", 8)),
        validation_file=str(write_task_file("masked-lm", tmp_path / "validation.jsonl", 4, seed=1)),
        unlabeled_file=str(write_task_file("masked-lm", tmp_path / "more.jsonl", 6, seed=2)),
    )
    tokenized = MaskedLM().prepare_datasets(load_raw_datasets(data_args), tokenizer, data_args)
    assert tokenized["unlabeled"].column_names == tokenized["train"].column_names  # masked by the collator
    assert "labels" in tokenized["validation"].column_names  # masked once, here


@pytest.mark.parametrize("case_id", ["token-classification", "question-answering", "regression"])
def test_tasks_without_a_transfer_set_refuse_the_unlabeled_file(tmp_path, case_id):
    tokenizer = tiny_tokenizer()
    task_case = case(case_id)
    teacher = task_case.build(num_layers=2, vocab_size=len(tokenizer))
    data_args = DataArguments(
        train_file=str(write_task_file(case_id, tmp_path / "train.jsonl", 8)),
        validation_file=str(write_task_file(case_id, tmp_path / "validation.jsonl", 4, seed=1)),
        unlabeled_file=str(write_task_file(case_id, tmp_path / "more.jsonl", 6, seed=2)),
    )
    with pytest.raises(ValueError, match=r"--unlabeled_file .*more.jsonl.*leave out --unlabeled_file"):
        task_for(teacher).prepare_datasets(load_raw_datasets(data_args), tokenizer, data_args, None, teacher.config)


# ---- the registry --------------------------------------------------------------------------------------------------


def test_every_task_of_the_table_is_registered_with_what_it_owns():
    assert tuple(TASKS) == (
        "sequence-classification",
        "token-classification",
        "question-answering",
        "masked-lm",
        "causal-lm",
    )
    assert {c.task for c in CASES} == set(TASKS)
    expected = {
        "sequence-classification": ("text-classification", "SEQ_CLS", False, True),
        "token-classification": ("token-classification", "TOKEN_CLS", False, True),
        "question-answering": ("question-answering", "QUESTION_ANS", False, False),
        "masked-lm": ("fill-mask", None, True, False),
        "causal-lm": ("text-generation", "CAUSAL_LM", True, False),
    }
    for name, cls in TASKS.items():
        assert (cls.pipeline_tag, cls.peft_task_type, cls.vocabulary_outputs, cls.labelled_outputs) == expected[name]
        assert get_task(name) is get_task(cls.pipeline_tag) is cls
        assert cls.auto_class.__name__.startswith("AutoModelFor") and cls.usage_example is not None


@pytest.mark.parametrize("task_case", CASES, ids=CASE_IDS)
def test_a_model_is_recognised_by_its_head(task_case):
    model = task_case.build(num_layers=1)
    assert task_name_of(model) == task_case.task
    assert task_name_of_class(type(model).__name__) == task_case.task
    assert isinstance(task_for(model), get_task(task_case.task))


def test_the_data_settings_the_tasks_read_are_fields_of_data_arguments_with_the_same_types():
    # From the class annotations: HfArgumentParser rewrites a parsed dataclass's `field.type` (`str | None` -> str).
    fields, settings = typing.get_type_hints(DataArguments), typing.get_type_hints(DataSettings)
    for name, annotation in settings.items():
        assert fields.get(name) == annotation, f"DataSettings.{name}: {annotation}, DataArguments: {fields.get(name)}"


def test_unknown_names_are_refused_listing_the_accepted_ones():
    with pytest.raises(ValueError, match="unknown task 'ner'; choose one of: text-classification, .*fill-mask"):
        get_task("ner")
    with pytest.raises(ValueError, match="unknown task 'summarization'"):
        DataArguments(train_file="train.csv", task="summarization")
    assert DataArguments(train_file="train.csv", task="fill-mask").task == "fill-mask"
    assert task_name_of_class("BartForConditionalGeneration", is_encoder_decoder=True) is None
    assert task_name_of_class("BertModel") is None


def test_register_task_refuses_a_taken_name_or_pipeline_tag(monkeypatch):
    from hf_distill import tasks
    from hf_distill.tasks import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def toy(**attributes):
        base = {"name": "toy", "pipeline_tag": "toy-task", "mapping_name": "MODEL_FOR_CTC_MAPPING_NAMES"}
        return type("Toy", (Task,), {**base, **attributes})

    with pytest.raises(ValueError, match="'masked-lm' is already the name or pipeline tag of MaskedLM"):
        register_task(toy(name="masked-lm"))
    with pytest.raises(ValueError, match="'fill-mask' is already the name or pipeline tag of MaskedLM"):
        register_task(toy(pipeline_tag="fill-mask"))
    with pytest.raises(ValueError, match="Toy has no pipeline_tag"):
        register_task(toy(pipeline_tag=""))
    with pytest.raises(TypeError, match="subclass of Task"):
        register_task(object)
    # A new task is one class: registered, it is found by name, by pipeline tag and by the head of a model.
    register_task(toy())
    assert tasks.get_task("toy-task").name == "toy" and tasks.task_name_of_class("Wav2Vec2ForCTC") == "toy"
    with pytest.raises(ValueError, match="'toy' is already"):
        register_task(toy())


REQUIRED_TASK_METHODS = ("logit_targets", "label_loss", "prepare_datasets", "evaluation")


@pytest.mark.parametrize("missing", REQUIRED_TASK_METHODS)
def test_a_task_missing_a_required_method_cannot_be_instantiated(missing):
    """An incomplete task fails when it is made, naming what it lacks, not at its first batch."""
    assert Task.__abstractmethods__ == frozenset(REQUIRED_TASK_METHODS)
    methods = {name: lambda self, *args, **kwargs: None for name in REQUIRED_TASK_METHODS}
    incomplete = type("Incomplete", (Task,), {k: v for k, v in methods.items() if k != missing})
    with pytest.raises(TypeError, match=f"abstract method.*{missing}"):
        incomplete()
    assert isinstance(type("Complete", (Task,), methods)(), Task)
    # Every registered task implements them all.
    assert all(isinstance(cls(), Task) for cls in TASKS.values())


def test_task_flags_have_unique_names_and_help():
    owners = {f.name: "DataArguments" for f in dataclasses.fields(DataArguments)}
    for cls in TASKS.values():
        if cls.data_arguments is None:
            continue
        for f in dataclasses.fields(cls.data_arguments):
            assert f.name not in owners, f"--{f.name} of {cls.__name__} is also a flag of {owners[f.name]}"
            assert f.metadata.get("help"), f"--{f.name} of {cls.__name__} has no help"
            owners[f.name] = cls.__name__
    for f in dataclasses.fields(DataArguments):
        assert f.metadata.get("help"), f"--{f.name} has no help"


def test_task_flags_are_checked_when_given():
    with pytest.raises(ValueError, match="--mlm_probability must be between 0 and 1"):
        MaskedLM.data_arguments(mlm_probability=1.5)
    with pytest.raises(ValueError, match="--max_answer_length must be positive"):
        QuestionAnswering.data_arguments(max_answer_length=0)
    assert TokenClassification.data_arguments().label_all_tokens is False


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
