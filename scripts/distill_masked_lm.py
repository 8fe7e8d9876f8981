"""Distil a masked language model into a general, half-depth student on plain text, DistilBERT's recipe:
`hf-distill train --task fill-mask` as a script. It takes exactly the options of `hf-distill train`.

The "triple loss": soft targets at the masked tokens (--kd_weight, at --temperature), the MLM loss (--task_weight)
and a cosine loss between the last hidden states (--hidden_weight with --hidden_loss_type cosine and --layer_map
pairing the last layers). DataCollatorForLanguageModeling masks --mlm_probability of the tokens of the `text`
column (or --text_column). Examples:

    # one process (CPU or one GPU); DistilBERT's weights: 5, 2, 1
    python scripts/distill_masked_lm.py --teacher_model_name_or_path google-bert/bert-base-uncased \
        --dataset_name wikitext --dataset_config_name wikitext-2-raw-v1 --output_dir mlm-student \
        --kd_weight 5 --task_weight 2 --hidden_weight 1 --hidden_loss_type cosine --layer_map 12:6

    # all GPUs of one machine, data parallel
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml \
        scripts/distill_masked_lm.py --teacher_model_name_or_path google-bert/bert-base-uncased \
        --dataset_name wikitext --dataset_config_name wikitext-2-raw-v1 --output_dir mlm-student \
        --kd_weight 5 --task_weight 2 --hidden_weight 1 --hidden_loss_type cosine --layer_map 12:6
"""

import sys

from hf_distill.cli import main

if __name__ == "__main__":
    # After the recipe and the flags, so that this script's task is the one that counts.
    main(["train", *sys.argv[1:], "--task", "fill-mask"])
