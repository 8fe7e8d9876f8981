"""Distil a teacher into a smaller student, for any task: the `hf-distill train` command as a script.

It takes exactly the options of `hf-distill train` (a YAML recipe and/or flags; `--task` or the teacher's head picks
the task) and runs the same code. `accelerate launch -m hf_distill.cli train ...` does the same without this file.
`tweets` is the recipe shipped in the package (hf_distill/recipes/tweets.yaml; `hf-distill configs` lists the recipes
and the Accelerate configs with their paths, for an installed package).
Examples:

    # one process (CPU or one GPU)
    python examples/distill.py tweets

    # one GPU through accelerate
    accelerate launch --config_file hf_distill/accelerate_configs/single_gpu.yaml \
        examples/distill.py tweets --output_dir student

    # all GPUs of one machine, data parallel (the teacher is replicated, never wrapped in DDP)
    accelerate launch --config_file hf_distill/accelerate_configs/multi_gpu.yaml \
        examples/distill.py tweets --per_device_train_batch_size 16

    # two processes on a CPU-only machine (gloo backend)
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        examples/distill.py tweets --use_cpu --ddp_find_unused_parameters false

    # other tasks: the task is read from the teacher's head (or given with --task)
    accelerate launch --config_file hf_distill/accelerate_configs/multi_gpu.yaml examples/distill.py \
        --teacher_model_name_or_path Qwen/Qwen2.5-0.5B --teacher_dtype bfloat16 \
        --dataset_name wikitext --dataset_config_name wikitext-2-raw-v1 --output_dir qwen-student --bf16
"""

import sys

from hf_distill.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
