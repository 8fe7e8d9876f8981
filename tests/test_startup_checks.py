"""What a run checks at start-up, before anything is written or trained (issue 13): the output folder, the tokenizer
against the teacher, `--max_length` against its position embeddings, the teacher's head against `--task`, an explicit
layer map against the layer counts, the teacher's path; and that no published file records a local teacher path."""

import json
import logging
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from tiny_task_models import (
    CORE_WORDS,
    TAGS,
    bert_config,
    classifier,
    gpt2,
    llama,
    masked_lm,
    tiny_bert,
    tiny_tokenizer,
    token_classifier,
    write_task_file,
)
from transformers import BertModel

from hf_distill import DistillationConfig
from hf_distill.cli import run_command, run_parser
from hf_distill.data import DataArguments
from hf_distill.hub import files_to_push
from hf_distill.layer_map import LAYER_STRATEGIES
from hf_distill.model_card import METRICS_FILE
from hf_distill.run import _check_max_length, _start
from hf_distill.teacher import check_model_path, load_model, position_limit

VOCAB = len(CORE_WORDS) + 5  # the rows of tiny_tokenizer()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_model(folder, model, tokenizer=True):
    model.save_pretrained(folder)
    if tokenizer:
        tiny_tokenizer().save_pretrained(folder)
    return folder


def train_flags(tmp_path, teacher, output_dir, case="text-classification"):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return [
        *("--teacher_model_name_or_path", str(teacher), "--output_dir", str(output_dir)),
        *("--train_file", str(write_task_file(case, data / "train.jsonl", 24, seed=1))),
        *("--validation_file", str(write_task_file(case, data / "validation.jsonl", 8, seed=2))),
        *("--max_steps", "2", "--per_device_train_batch_size", "8", "--report_to", "none", "--use_cpu"),
        *("--save_strategy", "no", "--disable_tqdm", "true", "--measure_latency", "false"),
    ]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def teacher_dir(tmp_path):
    return save_model(tmp_path / "teacher", classifier(num_layers=4, vocab_size=VOCAB))


# ---- 1. the output folder -------------------------------------------------------------------------------------------


def test_an_output_dir_holding_another_model_is_refused_and_left_as_it_was(tmp_path, teacher_dir):
    other = save_model(tmp_path / "other-model", masked_lm(num_layers=2, vocab_size=VOCAB))
    before = snapshot(other)
    with pytest.raises(
        ValueError, match=r"already holds a model that hf_distill did not write.*--overwrite_output_dir"
    ):
        run_command(["train", *train_flags(tmp_path, teacher_dir, other)])
    assert snapshot(other) == before


def test_the_teachers_own_folder_is_refused_even_with_overwrite(tmp_path, teacher_dir):
    before = snapshot(teacher_dir)
    flags = train_flags(tmp_path, teacher_dir, teacher_dir)
    with pytest.raises(ValueError, match=r"is the teacher's folder .* overwrite_output_dir does not allow this"):
        run_command(["train", *flags, "--overwrite_output_dir"])
    with pytest.raises(ValueError, match=r"is inside the teacher's folder"):
        run_command(["train", *train_flags(tmp_path, teacher_dir, teacher_dir / "student"), "--overwrite_output_dir"])
    assert snapshot(teacher_dir) == before


def test_a_rerun_into_the_runs_own_folder_works(tmp_path, teacher_dir):
    output = tmp_path / "student"
    run_command(["train", *train_flags(tmp_path, teacher_dir, output)])
    first = json.loads((output / METRICS_FILE).read_text())
    run_command(["train", *train_flags(tmp_path, teacher_dir, output)])  # the folder holds only this tool's outputs
    assert json.loads((output / METRICS_FILE).read_text())["student"]["parameters"] == first["student"]["parameters"]


def test_resume_true_skips_a_half_written_checkpoint(tmp_path):
    output = tmp_path / "run"
    for step in (2, 4):
        (output / f"checkpoint-{step}").mkdir(parents=True)
        (output / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"weights")
    (output / "checkpoint-2" / "trainer_state.json").write_text("{}")  # checkpoint-4 was interrupted
    config = DistillationConfig(output_dir=str(output), resume_from_checkpoint="true", report_to="none")
    assert _start(config) == str(output / "checkpoint-2")

    (output / "checkpoint-2" / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match=r"resume_from_checkpoint=True but .* holds no complete checkpoint-N"):
        _start(config)


# ---- 2. the tokenizer against the teacher ---------------------------------------------------------------------------


def test_a_teacher_folder_without_tokenizer_files_is_refused(tmp_path):
    teacher = save_model(tmp_path / "teacher", classifier(num_layers=4, vocab_size=VOCAB), tokenizer=False)
    output = tmp_path / "student"
    with pytest.raises(ValueError) as error:
        run_command(["train", *train_flags(tmp_path, teacher, output)])
    message = str(error.value)
    assert f"has 5 tokens but the teacher's embeddings have {VOCAB} rows" in message
    assert "holds no tokenizer files (tokenizer.json, vocab.txt" in message and "--tokenizer_name" in message
    assert not output.exists()


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path):
    teacher = save_model(tmp_path / "teacher", classifier(num_layers=4, vocab_size=VOCAB - 3))
    with pytest.raises(ValueError, match=rf"has {VOCAB} tokens but the teacher's embeddings have {VOCAB - 3} rows"):
        run_command(["train", *train_flags(tmp_path, teacher, tmp_path / "student")])
    assert not (tmp_path / "student").exists()


# ---- 3. --max_length against the position embeddings ----------------------------------------------------------------


def test_max_length_longer_than_the_position_embeddings_is_refused(tmp_path, teacher_dir):
    with pytest.raises(ValueError, match=r"--max_length 100 is longer than the teacher's 64 position embeddings"):
        run_command(["train", *train_flags(tmp_path, teacher_dir, tmp_path / "student"), "--max_length", "100"])
    assert not (tmp_path / "student").exists()


def test_position_limits_and_the_default_max_length():
    assert position_limit(classifier()) == 64 and position_limit(gpt2()) == 64
    assert position_limit(llama()) is None  # rotary positions: no hard limit, --max_length is not checked
    data_args = DataArguments(train_file="t.csv", max_length=100)
    _check_max_length(data_args, llama())
    assert data_args.max_length == 100
    data_args = DataArguments(train_file="t.csv")  # the default (128) is lowered to what the model reads
    _check_max_length(data_args, classifier())
    assert data_args.max_length == 64


# ---- 4. the teacher's head against --task ---------------------------------------------------------------------------


def test_a_teacher_with_another_head_than_task_is_refused(tmp_path):
    teacher = save_model(tmp_path / "ner", token_classifier(num_layers=4, vocab_size=VOCAB))
    flags = train_flags(tmp_path, teacher, tmp_path / "student")
    for name in ("--train_file", "--validation_file"):  # labels among the tagger's: it used to train silently
        path = Path(flags[flags.index(name) + 1])
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**row, "sentiment": TAGS[i % 2]}) + "\n" for i, row in enumerate(rows)))
    with pytest.raises(ValueError) as error:
        run_command(["train", *flags, "--task", "text-classification"])
    message = str(error.value)
    assert "is a BertForTokenClassification (token-classification) but --task text-classification" in message
    assert "drop --task" in message and "give a teacher with a text-classification head" in message
    assert not (tmp_path / "student").exists()


def test_a_bare_teacher_takes_the_head_of_task_and_a_student_must_share_the_teachers(tmp_path):
    bare = tmp_path / "bare"
    BertModel(bert_config(2, vocab_size=VOCAB)).save_pretrained(bare)
    assert type(load_model(bare, "fill-mask")).__name__ == "BertForMaskedLM"
    student = save_model(tmp_path / "mlm", masked_lm(num_layers=2, vocab_size=VOCAB))
    with pytest.raises(ValueError, match=r"the student .* is a BertForMaskedLM \(fill-mask\) but the other model"):
        load_model(student, classifier(vocab_size=VOCAB), role="student")


# ---- 5. an explicit layer map, used or not --------------------------------------------------------------------------


def test_an_unused_layer_map_out_of_range_is_refused(tmp_path, teacher_dir):
    out_of_range = r"layer_map pair 9:1 is out of range: the teacher has 4 layers.*It is unused: no active loss"
    with pytest.raises(ValueError, match=out_of_range):
        run_command(["train", *train_flags(tmp_path, teacher_dir, tmp_path / "student"), "--layer_map", "9:1"])
    assert not (tmp_path / "student").exists()


def test_an_unused_layer_map_is_not_recorded(tmp_path, teacher_dir, caplog):
    output = tmp_path / "student"
    logger = logging.getLogger("hf_distill")
    logger.addHandler(caplog.handler)  # transformers' loggers do not propagate to the root
    try:
        run_command(["train", *train_flags(tmp_path, teacher_dir, output), "--layer_map", "2:1"])
    finally:
        logger.removeHandler(caplog.handler)
    assert "layer_map 2:1 is unused: no active loss compares layers" in caplog.text
    assert "layer_map" not in json.loads((output / METRICS_FILE).read_text())["distillation"]
    assert "layer_map" not in DistillationConfig(output_dir="o", layer_map="2:1").distillation_settings()
    used = DistillationConfig(output_dir="o", layer_map="2:1", hidden_weight=1.0).distillation_settings()
    assert used["layer_map"] == "2:1"


# ---- 6. no local teacher path in a published file -------------------------------------------------------------------


@pytest.fixture
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("published")
    teacher = save_model(tmp_path / "my-teacher", classifier(num_layers=4, vocab_size=VOCAB))
    run_command(["train", *train_flags(tmp_path, teacher, tmp_path / "student"), "--hidden_weight", "1"])
    return teacher, tmp_path / "student"


def test_published_files_name_a_local_teacher_by_its_folder_name(trained):
    teacher, output = trained
    published = [name for name in files_to_push(output) if name != METRICS_FILE]
    assert {"config.json", "README.md", "model.safetensors"} <= set(published)
    for name in published:
        assert str(teacher).encode() not in (output / name).read_bytes(), name
    assert json.loads((output / "config.json").read_text())["distillation_teacher"] == "my-teacher"


def test_the_metrics_file_names_a_local_teacher_by_its_folder_name(trained):
    teacher, output = trained
    assert str(teacher) not in (output / METRICS_FILE).read_text()
    assert json.loads((output / METRICS_FILE).read_text())["teacher"]["name_or_path"] == "my-teacher"
    # A folder name is not a Hub id: the card must not claim `base_model: my-teacher`.
    assert "base_model" not in (output / "README.md").read_text().split("---")[1]


def test_several_local_teachers_are_recorded_by_their_folder_names(tmp_path):
    config = DistillationConfig(
        output_dir="o", teacher_model_name_or_path=f"{tmp_path / 'a'},org/hub-teacher", report_to="none"
    )
    assert config.distillation_settings()["teachers"] == "a,org/hub-teacher"


# ---- 7. a teacher path typo ---------------------------------------------------------------------------------------


def test_a_local_looking_typo_says_the_folder_does_not_exist_with_the_closest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "teacher-v2").mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(
        FileNotFoundError, match=r"teacher './models/teacher-v1': no such folder; did you mean 'models/teacher-v2'"
    ):
        check_model_path("./models/teacher-v1")
    with pytest.raises(FileNotFoundError, match=r"no such folder\. Give a folder .*--teacher_model_name_or_path"):
        check_model_path("./elsewhere/unrelated-name")
    check_model_path("models/teacher-v1")  # online, org/name is a Hub id: the loader asks the Hub


def test_an_offline_typo_says_the_folder_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "teacher-v2").mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError) as error:
        run_command(["train", *train_flags(tmp_path, "models/teacher-v1", tmp_path / "student")])
    message = str(error.value)
    assert "teacher 'models/teacher-v1': no such folder (and no Hub download of that id is cached" in message
    assert "did you mean 'models/teacher-v2'?" in message and "connect" not in message


# ---- 8. defaults and help -----------------------------------------------------------------------------------------


def test_hub_strategy_defaults_to_one_push_at_the_end_and_the_help_lists_the_layer_strategies():
    config = DistillationConfig(output_dir="o", report_to="none")
    assert config.hub_strategy == "end" and config.overwrite_output_dir is False
    help_text = run_parser("hf-distill train").format_help()
    assert "--overwrite_output_dir" in help_text
    layer_map_help = DistillationConfig.__dataclass_fields__["layer_map"].metadata["help"]
    assert f"({', '.join(LAYER_STRATEGIES)})" in layer_map_help and "skip" not in layer_map_help


def test_the_python_api_never_writes_into_the_teachers_folder_and_names_an_oversized_tokenizer(tmp_path):
    from hf_distill import DistillationTrainer

    teacher_dir = tmp_path / "teacher"
    tokenizer = tiny_tokenizer()
    tiny_bert(vocab_size=len(tokenizer)).save_pretrained(teacher_dir)
    student = tiny_bert(num_layers=2, vocab_size=len(tokenizer))
    for output in (teacher_dir, teacher_dir / "inside"):
        args = DistillationConfig(output_dir=str(output), report_to="none", use_cpu=True)
        with pytest.raises(ValueError, match="the teacher's folder"):
            DistillationTrainer(model=student, teacher_model=str(teacher_dir), args=args)
    args = DistillationConfig(output_dir=str(tmp_path / "student"), report_to="none", use_cpu=True)
    small_teacher = tiny_bert(vocab_size=len(tokenizer) - 3)
    small_student = tiny_bert(num_layers=2, vocab_size=len(tokenizer) - 3)
    with pytest.raises(ValueError, match=rf"has {len(tokenizer)} tokens but the teacher's embeddings have"):
        DistillationTrainer(model=small_student, teacher_model=small_teacher, args=args, processing_class=tokenizer)
