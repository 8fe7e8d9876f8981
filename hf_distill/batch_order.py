"""The order of training batches: transformers' length-grouped sampler made reproducible, and when it can be used.

[`DistillationTrainer`](hf_distill.trainer) groups examples of similar lengths by default (less padding); it uses
[`SeededLengthGroupedSampler`] for that, and random batches for data whose lengths cannot be read ([`has_lengths`]).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' `LengthGroupedSampler` with an order fixed by the seed and the epoch, as random batches have.

    transformers' own draws from the global RNG, so its order depends on whatever ran before the epoch: two runs with
    the same seed differ, and a run resumed in the middle of an epoch skips batches of another order than the one it
    trained on. Here each epoch's order comes from `seed + epoch` (the Trainer calls `set_epoch`)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def has_lengths(dataset, length_column: str, processing_class) -> bool:
    """Whether `LengthGroupedSampler` can read the length of each example of `dataset`."""
    import datasets

    if dataset is None or not hasattr(dataset, "__len__") or len(dataset) == 0:
        return True  # nothing to group: transformers decides
    if isinstance(dataset, datasets.Dataset) and length_column in dataset.column_names:
        return True
    names = getattr(processing_class, "model_input_names", None)
    name = names[0] if names else "input_ids"
    try:
        first = dataset[0]
    except Exception:  # noqa: BLE001 - a dataset that cannot be indexed: transformers reports it
        return True
    return isinstance(first, Mapping) and name in first
