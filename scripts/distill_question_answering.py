"""Distil an extractive question-answering teacher into a smaller student: `hf-distill train --task
question-answering` as a script. It takes exactly the options of `hf-distill train` (a YAML recipe and/or flags).

The data has `question`, `context` and `answers` columns, SQuAD style (`{"text": [...], "answer_start": [...]}`).
The student learns the teacher's start and end distributions; it is scored by exact match and F1. Examples:

    # one process (CPU or one GPU)
    python scripts/distill_question_answering.py \
        --teacher_model_name_or_path distilbert/distilbert-base-cased-distilled-squad \
        --dataset_name squad --max_length 384 --output_dir qa-student

    # all GPUs of one machine, data parallel
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml \
        scripts/distill_question_answering.py \
        --teacher_model_name_or_path distilbert/distilbert-base-cased-distilled-squad \
        --dataset_name squad --max_length 384 --output_dir qa-student
"""

import sys

from hf_distill.cli import main

if __name__ == "__main__":
    # After the recipe and the flags, so that this script's task is the one that counts.
    main(["train", *sys.argv[1:], "--task", "question-answering"])
