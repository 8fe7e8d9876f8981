"""Distil a token-classification teacher (NER, POS tagging) into a smaller student: `hf-distill train --task
token-classification` as a script. It takes exactly the options of `hf-distill train` (a YAML recipe and/or flags).

The data has a column of word lists (`tokens`, or --tokens_column) and a column of tags, one per word, as names
such as B-PER or as ids (`ner_tags`, or --tags_column); the tags must be the teacher's labels. Examples:

    # one process (CPU or one GPU)
    python scripts/distill_token_classification.py --teacher_model_name_or_path dslim/bert-base-NER \
        --dataset_name conll2003 --output_dir ner-student

    # all GPUs of one machine, data parallel
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml \
        scripts/distill_token_classification.py --teacher_model_name_or_path dslim/bert-base-NER \
        --dataset_name conll2003 --output_dir ner-student
"""

import sys

from hf_distill.cli import main

if __name__ == "__main__":
    # After the recipe and the flags, so that this script's task is the one that counts.
    main(["train", *sys.argv[1:], "--task", "token-classification"])
