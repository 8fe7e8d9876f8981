"""The files of a saved model folder, by name: the model's, the tokenizer's, and the card, metrics and plots a run
writes beside them.

Pushing ([`~hf_distill.hub.files_to_push`]), deciding which folders hold only a run's outputs
([`~hf_distill.output_folders.check_output_dir`]), the card, the measurements and the tokenizer checks all name the
same files; they read the names from here.
"""

from __future__ import annotations

__all__ = [
    "CARD_FILES",
    "METRICS_FILE",
    "MODEL_FILES",
    "PLOT_FILES",
    "TOKENIZER_FILES",
    "TRAINING_PLOT",
    "VOCABULARY_FILES",
]

# The files of a saved model, by name: `save_pretrained` writes these (sharded weights are added from the index).
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_config.json",  # a peft student saved as its adapter
    "adapter_model.safetensors",
)
# Tokenizer files by their real names; the saved tokenizer class's own `vocab_files_names` are added to these.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",  # sentencepiece: Llama, Mistral, ...
    "spiece.model",  # T5, ALBERT
    "sentencepiece.bpe.model",  # XLM-R, CamemBERT
    "sentencepiece.model",
)
# Files that hold a tokenizer's vocabulary (tokenizer_config.json alone holds none).
VOCABULARY_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "sentencepiece.model",
)
# The run's measurements, which the card is built from.
METRICS_FILE = "distillation_metrics.json"
# The training and evaluation loss curves of the run (written when matplotlib is installed), shown by the card.
TRAINING_PLOT = "distillation_training.png"
# The card, the run's measurements, and the plots the run writes (images that README.md shows are added).
CARD_FILES = ("README.md", METRICS_FILE)
PLOT_FILES = ("distillation.png", TRAINING_PLOT)
