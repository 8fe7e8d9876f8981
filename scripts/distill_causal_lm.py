"""Distil a causal language model (GPT-2, Llama, Qwen, ...) into a shallower student on plain text:
`hf-distill train --task text-generation` as a script. It takes exactly the options of `hf-distill train`.

The student learns the teacher's next-token distributions (shifted soft targets at every real token) and the LM loss
on the `text` column (or --text_column). Examples:

    # one process (CPU or one GPU)
    python scripts/distill_causal_lm.py --teacher_model_name_or_path openai-community/gpt2 \
        --dataset_name wikitext --dataset_config_name wikitext-2-raw-v1 --output_dir gpt2-student

    # all GPUs of one machine, data parallel, the teacher in bfloat16
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml \
        scripts/distill_causal_lm.py --teacher_model_name_or_path Qwen/Qwen2.5-0.5B --teacher_dtype bfloat16 \
        --dataset_name wikitext --dataset_config_name wikitext-2-raw-v1 --output_dir qwen-student --bf16
"""

import sys

from hf_distill.cli import main

if __name__ == "__main__":
    # After the recipe and the flags, so that this script's task is the one that counts.
    main(["train", *sys.argv[1:], "--task", "text-generation"])
