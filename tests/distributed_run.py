"""A tiny distillation run, launched by tests/test_distributed.py with one process or with torchrun (two ranks).

    torchrun --nproc_per_node 2 tests/distributed_run.py OUT_DIR PER_DEVICE_BATCH [ACCUMULATION] [MODE]

MODE is `full` (3 steps), `interrupt` (saves a checkpoint every step and stops after step 2), `resume` (resumes
from OUT_DIR/checkpoint-2 and finishes the 3 steps), `live_no_attention` (full, without the attention loss) or
`cache` (the same from the teacher cache at $HF_DISTILL_TEST_CACHE, with no live teacher).
Each rank writes OUT_DIR/rank{R}.json (what it saw); rank 0 also writes OUT_DIR/final.safetensors with the trained
student and projections.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tiny_task_models import pad_collate, random_classification_dataset, tiny_bert  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from hf_distill import DistillationConfig, DistillationTrainer  # noqa: E402


class StopAfter(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def training_data():
    return random_classification_dataset(48, seed=7, min_len=1, max_len=30)


def main(out_dir, per_device_batch, accumulation=1, mode="full"):
    config = DistillationConfig(
        output_dir=out_dir,
        report_to="none",
        # HF_DISTILL_TEST_CUDA=1 runs on GPUs (the DeepSpeed and FSDP tests); the default is the CPU (gloo).
        use_cpu=os.environ.get("HF_DISTILL_TEST_CUDA") != "1",
        per_device_train_batch_size=per_device_batch,
        gradient_accumulation_steps=accumulation,
        max_steps=3,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
        save_strategy="no" if mode == "full" else "steps",
        save_steps=1,
        logging_steps=1,
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
        seed=0,
        kd_weight=1.0,
        label_weight=0.5,
        logit_mse_weight=0.3,
        hidden_weight=2.0,
        # A teacher cache holds no attention maps.
        attention_weight=0.0 if mode in ("cache", "live_no_attention") else 1.0,
        teacher_cache=os.environ["HF_DISTILL_TEST_CACHE"] if mode == "cache" else None,
    )
    trainer = DistillationTrainer(
        model=tiny_bert(num_layers=2, hidden=16, seed=1),
        teacher_model=None if mode == "cache" else tiny_bert(num_layers=4, hidden=32, seed=0),
        args=config,
        # Lengths vary a lot, so ranks see different token counts: only global normalisation makes them agree.
        train_dataset=training_data(),
        data_collator=pad_collate,
    )
    if mode == "interrupt":
        trainer.add_callback(StopAfter(2))
    trainer.train(resume_from_checkpoint=os.path.join(out_dir, "checkpoint-2") if mode == "resume" else None)
    rank = trainer.args.process_index
    report = {
        "rank": rank,
        "world_size": trainer.args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "student_wrapped_in_ddp": isinstance(trainer.model_wrapped, DistributedDataParallel),
        "teacher_wrapped_in_ddp": isinstance(trainer.teacher, DistributedDataParallel),
        "teacher_requires_grad": any(p.requires_grad for p in trainer.teachers[0].parameters())
        if trainer.teachers
        else None,
        "teacher_cache": trainer.teacher_cache.path if trainer.teacher_cache is not None else None,
        "steps": trainer.state.global_step,
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(report, handle)
    # Gathered on every rank (ZeRO-3 and FSDP hold shards); written by rank 0.
    full_state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if rank == 0:
        state = {k: v.detach().cpu().contiguous() for k, v in full_state.items()}
        save_file(state, os.path.join(out_dir, "final.safetensors"))
    # Tear the process group down before the interpreter exits: left to interpreter shutdown, gloo's threads can
    # abort the process ("terminate called without an active exception") after all the work is done.
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1, *sys.argv[4:5])
