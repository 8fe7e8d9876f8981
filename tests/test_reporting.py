"""What a run reports, and to whom: the student given by path, the final figures sent to the trackers, labelled
measurement progress and the summary line, the default batch order, the card's widget, license and training plot, and
the task metric of `trainer.evaluate()` without a `compute_metrics` (issue 13)."""

import logging
import re
import sys

import pytest
import torch
import yaml
from datasets import Dataset
from tiny_task_models import (
    CASES,
    LABELS,
    bert_config,
    pad_batch,
    pad_collate,
    random_classification_dataset,
    random_task_rows,
    tiny_tokenizer,
)
from transformers import BertForSequenceClassification, BertModel, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from hf_distill import DistillationConfig, DistillationTrainer, build_student, measure_distillation
from hf_distill.hub import PLOT_FILES, files_to_push
from hf_distill.measure import MeasureArguments
from hf_distill.model_card import TRAINING_PLOT, build_model_card
from hf_distill.tasks import task_for

pytestmark = pytest.mark.usefixtures("one_thread")


def config(tmp_path, **overrides):
    settings = dict(
        eval_steps=2,
        output_dir=str(tmp_path / "student"),
        max_steps=3,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    settings.update(overrides)
    return DistillationConfig(**settings)


def split_card(text):
    front, body = re.match(r"^---\n(.*?)\n---\n(.*)$", text, flags=re.S).groups()
    return yaml.safe_load(front), body


def table_rows(body):
    rows = {}
    for line in body.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def save_teacher(folder, model, readme=None):
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    if readme is not None:
        (folder / "README.md").write_text(readme, encoding="utf-8")
    return folder


def classification_trainer(tmp_path, teacher, eval_dataset=None, **overrides):
    return DistillationTrainer(
        model=build_student(teacher, num_layers=2, strategy="every_other"),
        teacher_model=teacher,
        args=config(tmp_path, **overrides),
        train_dataset=random_classification_dataset(24),
        eval_dataset=eval_dataset,
        data_collator=pad_collate,
    )


# ---- 1. the student given by path or Hub id, as TRL accepts it -----------------------------------------------------


def test_student_given_as_a_folder_is_loaded_with_the_teachers_task(tmp_path):
    """A base model folder (no head) becomes a student with the teacher's head and labels; the teacher may be a path
    too (loaded first, its head decides) or come from the config."""
    teacher = save_teacher(tmp_path / "teacher", BertForSequenceClassification(bert_config(4, id2label=LABELS)))
    BertModel(bert_config(2)).save_pretrained(tmp_path / "base")

    trainer = DistillationTrainer(model=str(tmp_path / "base"), teacher_model=str(teacher), args=config(tmp_path))
    assert type(trainer.student) is BertForSequenceClassification
    assert trainer.student.config.num_hidden_layers == 2 and trainer.student.config.id2label == LABELS
    assert trainer.teacher.config.num_hidden_layers == 4

    args = config(tmp_path, teacher_model_name_or_path=str(teacher))
    trainer = DistillationTrainer(model=tmp_path / "base", args=args)  # a PathLike, the teacher from the config
    assert type(trainer.student) is BertForSequenceClassification and trainer.task.name == "sequence-classification"


def test_student_path_that_does_not_exist_is_named(tmp_path, teacher):
    with pytest.raises(FileNotFoundError, match="could not load the student './missing'"):
        DistillationTrainer(model="./missing", teacher_model=teacher, args=config(tmp_path))
    with pytest.raises(TypeError, match="a transformers PreTrainedModel, or its folder or Hub id"):
        DistillationTrainer(model=3, teacher_model=teacher, args=config(tmp_path))


# ---- 2 and 3. the final figures reach the trackers; the measurement is labelled; the summary is logged ------------


class Recorder(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def test_final_figures_reach_the_trackers_and_the_measurement_says_what_it_does(tmp_path, teacher, capsys, caplog):
    recorder = Recorder()
    trainer = classification_trainer(tmp_path, teacher, disable_tqdm=False)
    trainer.add_callback(recorder)
    trainer.train()
    trainer.save_model()
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="hf_distill"):
        metrics = measure_distillation(
            trainer,
            random_classification_dataset(20, seed=1),
            measure_args=MeasureArguments(latency_batch_size=2, latency_sequence_length=8),
            dataset={"name": "train.csv", "eval_split": "test", "eval_file": "test.csv"},
        )
    final = recorder.logs[-1]
    assert final["final/student_accuracy"] == metrics["student"]["accuracy"]
    assert final["final/teacher_accuracy"] == metrics["teacher"]["accuracy"]
    assert final["final/teacher_agreement"] == metrics["student"]["teacher_agreement"]
    assert final["final/parameter_ratio"] == pytest.approx(
        metrics["student"]["parameters"] / metrics["teacher"]["parameters"]
    )
    assert final["final/speedup"] > 0 and "final/student_latency_ms_per_batch" in final
    assert trainer.state.log_history[-1]["final/speedup"] == final["final/speedup"]  # the history report_to reads

    progress = capsys.readouterr().err
    assert "Measuring the student on test.csv" in progress and "Measuring the teacher on test.csv" in progress
    summary = f"Student saved to {tmp_path / 'student'}: Accuracy"
    assert any(summary in record.getMessage() for record in caplog.records)


# ---- 4. batches of similar lengths by default ---------------------------------------------------------------------


def test_batches_group_examples_of_similar_length_by_default(tmp_path, teacher):
    args = config(tmp_path)
    assert args.train_sampling_strategy == "group_by_length"
    help_text = DistillationConfig.__dataclass_fields__["train_sampling_strategy"].metadata["help"]
    assert "padding" in help_text and "random" in help_text
    trainer = classification_trainer(tmp_path, teacher)
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    trainer.train()
    trainer.save_model()
    metrics = measure_distillation(
        trainer, random_classification_dataset(8, seed=1), measure_args=MeasureArguments(measure_latency=False)
    )
    assert metrics["training"]["train_sampling_strategy"] == "group_by_length"
    _, body = split_card((tmp_path / "student" / "README.md").read_text())
    assert table_rows(body)["Batch order"] == ["group_by_length"]


def test_batches_of_similar_length_follow_the_seed_and_the_epoch(tmp_path, teacher):
    """The order is the seed's, whatever ran before (transformers' sampler reads the global RNG): same seed, same
    batches, and a resumed run replays the epoch it skips into."""

    def order(seed, epoch):
        sampler = classification_trainer(tmp_path, teacher, seed=seed)._get_train_sampler()
        sampler.set_epoch(epoch)
        torch.manual_seed(len(order.calls))  # anything may have used the global RNG in between
        order.calls.append(seed)
        return list(sampler)

    order.calls = []
    assert order(0, 0) == order(0, 0) and order(0, 1) == order(0, 1)
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    assert sorted(order(0, 0)) == list(range(24))


def test_a_dataset_without_token_ids_falls_back_to_random_batches(tmp_path, teacher, caplog):
    """Grouping by length reads each example's input ids; examples without them train in random order, as before."""

    class Embedded(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"inputs_embeds": torch.zeros(5, 32), "labels": i % 3}

    trainer = DistillationTrainer(
        model=build_student(teacher, num_layers=2),
        teacher_model=teacher,
        args=config(tmp_path),
        train_dataset=Embedded(),
    )
    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        sampler = trainer._get_train_sampler()
    assert isinstance(sampler, torch.utils.data.RandomSampler)
    assert "train_sampling_strategy='group_by_length' needs" in caplog.text


# ---- 5. the card: widget, license, training plot -------------------------------------------------------------------

WIDGETS = {
    "text-classification": [{"text": "I love this movie!"}],
    "regression": [{"text": "I love this movie!"}],
    "token-classification": [{"text": "My name is Sarah and I live in London."}],
    "question-answering": [{"text": "Where do I live?", "context": "My name is Sarah and I live in London."}],
    "masked-lm": [{"text": "Paris is the [MASK] of France."}],
    "causal-lm-gpt2": [{"text": "Once upon a time"}],
}


@pytest.mark.parametrize("case", [c for c in CASES if c.id in WIDGETS], ids=str)
def test_card_has_a_widget_example_of_its_task(tmp_path, case):
    model = case.build(num_layers=2)
    model.config.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    meta, _ = split_card(str(build_model_card(str(tmp_path), task=task_for(model))))
    assert meta["widget"] == WIDGETS[case.id]


def test_card_license_is_the_teachers(tmp_path):
    licensed = save_teacher(tmp_path / "licensed", BertForSequenceClassification(bert_config(4, id2label=LABELS)))
    (licensed / "README.md").write_text("---\nlicense: mit\ntags: [x]\n---\n# teacher\n", encoding="utf-8")
    trainer = DistillationTrainer(model=str(licensed), teacher_model=str(licensed), args=config(tmp_path))
    trainer.create_model_card()
    meta, body = split_card((tmp_path / "student" / "README.md").read_text())
    assert meta["license"] == "mit" and "`mit`, the license of its teacher" in body

    trainer.create_model_card(license="apache-2.0")  # the user's word wins
    meta, body = split_card((tmp_path / "student" / "README.md").read_text())
    assert meta["license"] == "apache-2.0" and "the license of its teacher" not in body

    unlicensed = save_teacher(tmp_path / "unlicensed", BertForSequenceClassification(bert_config(4, id2label=LABELS)))
    trainer = DistillationTrainer(model=str(unlicensed), teacher_model=str(unlicensed), args=config(tmp_path))
    trainer.create_model_card()
    meta, body = split_card((tmp_path / "student" / "README.md").read_text())
    assert "license" not in meta and "inherits the teacher's license terms" in body


def test_card_embeds_the_training_plot_and_the_push_sends_it(tmp_path, teacher):
    pytest.importorskip("matplotlib")
    assert TRAINING_PLOT in PLOT_FILES
    evaluation = random_classification_dataset(8, seed=1)
    trainer = classification_trainer(tmp_path, teacher, evaluation, logging_steps=1, eval_strategy="steps")
    trainer.train()
    trainer.save_model()
    trainer.create_model_card()
    folder = tmp_path / "student"
    assert (folder / TRAINING_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"![Training and evaluation loss]({TRAINING_PLOT})" in (folder / "README.md").read_text()
    assert TRAINING_PLOT in files_to_push(folder)


def test_without_matplotlib_no_plot_and_no_broken_link(tmp_path, teacher, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError, as when it is not installed
    trainer = classification_trainer(tmp_path, teacher, logging_steps=1)
    trainer.train()
    trainer.save_model()
    trainer.create_model_card()
    folder = tmp_path / "student"
    assert not (folder / TRAINING_PLOT).exists() and TRAINING_PLOT not in (folder / "README.md").read_text()


# ---- 6. trainer.evaluate() without compute_metrics gives the task metric --------------------------------------------


@pytest.mark.parametrize("kind", ["text-classification", "regression"])
def test_evaluate_without_compute_metrics_shows_the_task_metric_on_the_card(tmp_path, kind):
    case = next(c for c in CASES if c.id == kind)
    student, teacher = case.pair()
    rows = Dataset.from_list(random_task_rows(case.rows, n=16))
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=config(tmp_path), train_dataset=rows, data_collator=pad_batch
    )
    metrics = trainer.evaluate(Dataset.from_list(random_task_rows(case.rows, n=10, seed=1)))
    for key in case.metric_keys:
        assert isinstance(metrics[f"eval_{key}"], float), key
    assert trainer.compute_metrics is None  # the default is per evaluation, not kept
    trainer.create_model_card()
    _, body = split_card((tmp_path / "student" / "README.md").read_text())
    assert "No evaluation results were recorded" not in body
    labels = ("MSE", "Pearson correlation") if kind == "regression" else ("Accuracy", "Macro-F1")
    for label in labels:
        assert table_rows(body)[label][1] not in ("", "–"), label


def test_evaluate_of_question_answering_without_offsets_skips_the_task_metric(tmp_path):
    case = next(c for c in CASES if c.id == "question-answering")
    student, teacher = case.pair()
    rows = Dataset.from_list(random_task_rows(case.rows, n=10))
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=config(tmp_path), train_dataset=rows, data_collator=pad_batch
    )
    metrics = trainer.evaluate(rows)
    assert "eval_exact_match" not in metrics and metrics["eval_teacher_agreement"] >= 0


def test_user_compute_metrics_is_kept(tmp_path, teacher):
    trainer = classification_trainer(tmp_path, teacher)
    trainer.compute_metrics = lambda prediction: {"mine": 1.0}
    metrics = trainer.evaluate(random_classification_dataset(8, seed=1))
    assert metrics["eval_mine"] == 1.0 and "eval_accuracy" not in metrics


def test_summary_names_the_folder(tmp_path):
    # The summary line that the command prints (run.py) is the one measure logs.
    from hf_distill.measure import summarize

    metrics = {
        "student": {"accuracy": 0.5},
        "teacher": {"accuracy": 0.75},
        "dataset": {"eval_file": "test.csv"},
    }
    task = task_for(CASES[0].build(num_layers=2))
    line = summarize(str(tmp_path), metrics, task)
    assert line == f"Student saved to {tmp_path}: Accuracy 0.5 (teacher 0.75) on test.csv"


def my_accuracy(prediction):
    """A user's own `compute_metrics`, written as the transformers docs show it."""
    predicted = prediction.predictions.argmax(-1)
    return {"accuracy": float((predicted == prediction.label_ids).mean())}


@pytest.mark.parametrize(
    "dataset, name",
    [(None, "evaluation data"), ("tweets", "tweets"), ("/home/me/private/tweets-test.csv", "tweets-test.csv")],
    ids=["unnamed", "named", "a-path"],
)
def test_the_python_apis_card_carries_model_index_results(tmp_path, teacher, dataset, name):
    """train(), evaluate(), save_model(), create_model_card() with the user's compute_metrics: the Hub's evaluation
    results (model-index) hold the figures the body shows, on data named by the caller (a path by its file name only)
    or, unnamed, "evaluation data"."""
    trainer = DistillationTrainer(
        model=build_student(teacher, num_layers=2, strategy="every_other"),
        teacher_model=teacher,
        args=config(tmp_path),
        train_dataset=random_classification_dataset(24),
        data_collator=pad_collate,
        compute_metrics=my_accuracy,
    )
    trainer.train()
    figures = trainer.evaluate(random_classification_dataset(12, seed=1))
    trainer.save_model()
    trainer.create_model_card(**({} if dataset is None else {"dataset": dataset}))
    meta, body = split_card((tmp_path / "student" / "README.md").read_text())
    assert table_rows(body)["Accuracy"][1] == f"{figures['eval_accuracy'] * 100:.2f}%"
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    assert result["task"]["type"] == "text-classification"
    assert result["dataset"] == {"name": name, "type": name}
    assert result["metrics"] == [{"type": "accuracy", "value": figures["eval_accuracy"], "name": "Accuracy"}]
    assert "/home/me" not in (tmp_path / "student" / "README.md").read_text()
