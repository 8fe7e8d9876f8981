"""Distil a text-classification teacher into a smaller student: the `hf-distill train` command as a script.

It takes exactly the options of `hf-distill train` (a YAML recipe and/or flags) and runs the same code. Examples:

    # one process (CPU or one GPU)
    python scripts/distill_text_classification.py scripts/recipes/tweets.yaml

    # one GPU through accelerate
    accelerate launch --config_file scripts/accelerate_configs/single_gpu.yaml \
        scripts/distill_text_classification.py scripts/recipes/tweets.yaml --output_dir student

    # all GPUs of one machine, data parallel (the teacher is replicated, never wrapped in DDP)
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml \
        scripts/distill_text_classification.py scripts/recipes/tweets.yaml --per_device_train_batch_size 16

    # two processes on a CPU-only machine (gloo backend)
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        scripts/distill_text_classification.py scripts/recipes/tweets.yaml --use_cpu --ddp_find_unused_parameters false
"""

import sys

from hf_distill.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
