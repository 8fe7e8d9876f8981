"""Teacher placement for each Accelerate engine, and the launch configs. Real DeepSpeed and FSDP runs need GPUs."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.utils import DistributedType
from tiny_task_models import pad_collate, random_classification_dataset, tiny_bert

from hf_distill import DistillationConfig, DistillationTrainer
from hf_distill.teacher import teacher_placement

CONFIGS = Path(__file__).resolve().parents[1] / "hf_distill" / "accelerate_configs"


def fake_accelerator(engine, zero_stage=None):
    plugin = SimpleNamespace(zero_stage=zero_stage) if zero_stage is not None else None
    return SimpleNamespace(distributed_type=engine, state=SimpleNamespace(deepspeed_plugin=plugin))


@pytest.mark.parametrize(
    "engine, zero_stage, on_cpu, expected",
    [
        (DistributedType.NO, None, False, "device"),
        (DistributedType.MULTI_CPU, None, False, "device"),
        (DistributedType.MULTI_GPU, None, False, "device"),
        (DistributedType.DEEPSPEED, 1, False, "device"),
        (DistributedType.DEEPSPEED, 2, False, "device"),
        (DistributedType.DEEPSPEED, 3, False, "deepspeed-zero3"),
        (DistributedType.FSDP, None, False, "fsdp"),
        (DistributedType.MULTI_GPU, None, True, "cpu"),
        (DistributedType.DEEPSPEED, 2, True, "cpu"),
    ],
)
def test_teacher_placement_per_engine(engine, zero_stage, on_cpu, expected):
    assert teacher_placement(fake_accelerator(engine, zero_stage), on_cpu) == expected


@pytest.mark.parametrize("engine, zero_stage", [(DistributedType.DEEPSPEED, 3), (DistributedType.FSDP, None)])
def test_teacher_on_cpu_is_refused_where_the_engine_shards_the_teacher(engine, zero_stage):
    with pytest.raises(ValueError, match="teacher_on_cpu cannot be combined"):
        teacher_placement(fake_accelerator(engine, zero_stage), on_cpu=True)


@pytest.mark.parametrize(
    "name, engine, processes",
    [
        ("single_gpu.yaml", "NO", 1),
        ("multi_gpu.yaml", "MULTI_GPU", 8),
        ("deepspeed_zero2.yaml", "DEEPSPEED", 8),
        ("deepspeed_zero3.yaml", "DEEPSPEED", 8),
        ("fsdp.yaml", "FSDP", 8),
        ("multi_node.yaml", "MULTI_GPU", 16),
    ],
)
def test_launch_configs_parse_with_accelerate(name, engine, processes):
    config = ClusterConfig.from_yaml_file(str(CONFIGS / name))
    assert str(config.distributed_type).endswith(engine) and config.num_processes == processes
    if "zero" in name:
        assert config.deepspeed_config["zero_stage"] == int(name[-6])
    if name == "fsdp.yaml":
        assert config.fsdp_config["fsdp_version"] == 2


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_teacher_runs_in_its_own_dtype_while_the_student_trains_in_float32(tmp_path, dtype):
    teacher, student = tiny_bert(4, seed=0), tiny_bert(2, seed=1)
    args = DistillationConfig(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        max_steps=2,
        per_device_train_batch_size=8,
        teacher_dtype=dtype,
        hidden_weight=1.0,
        disable_tqdm=True,
        save_strategy="no",
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=random_classification_dataset(),
        data_collator=pad_collate,
    )
    assert trainer.teacher.dtype == getattr(torch, dtype)
    trainer.train()
    assert student.dtype == torch.float32
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in trainer.state.log_history if "loss" in e)


def test_bad_teacher_dtype_is_named(tmp_path):
    with pytest.raises(ValueError, match="teacher_dtype must be one of"):
        DistillationConfig(output_dir=str(tmp_path), teacher_dtype="int8")


@pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile (dynamo) is not supported here")
def test_torch_compile_trains_with_the_teacher_given_its_inputs(tmp_path):
    """`torch_compile=True`: Accelerate compiles the teacher, and the teacher's inputs are read through the compiled
    wrapper. The `eager` dynamo backend gives the same `OptimizedModule` wrapper without code generation (inductor
    compiles C++ for about a minute even for this tiny model on a CPU), so the check stays fast."""

    def losses(compile):
        teacher, student = tiny_bert(4, seed=0), tiny_bert(2, seed=1)
        args = DistillationConfig(
            output_dir=str(tmp_path / str(compile)),
            report_to="none",
            use_cpu=True,
            max_steps=2,
            logging_steps=1,
            per_device_train_batch_size=8,
            torch_compile=compile,
            torch_compile_backend="eager" if compile else None,
            disable_tqdm=True,
            save_strategy="no",
        )
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=args,
            train_dataset=random_classification_dataset(),
            data_collator=pad_collate,
        )
        assert isinstance(trainer.teacher, torch._dynamo.eval_frame.OptimizedModule) == compile
        trainer.train()
        return [value for e in trainer.state.log_history if "loss" in e for value in (e["loss"], e["loss_kd"])]

    compiled = losses(True)
    assert len(compiled) == 4
    assert compiled == pytest.approx(losses(False), rel=1e-5)
