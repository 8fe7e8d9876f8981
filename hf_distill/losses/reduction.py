"""How every loss of `hf_distill.losses` turns its per-item values into one scalar, and what the losses share.

`_reduce` sums a per-item loss over the counted items and divides by `num_items`; `_item_weights` gives each item's
weight in that sum, for the passes that make their gradients themselves (`hf_distill.losses.one_pass`).
`IGNORE_INDEX` is the label of an item that no label loss counts; `_check_same_shape` is the shape check of the
losses that compare two tensors element by element.
"""

from __future__ import annotations

import torch

__all__ = ["IGNORE_INDEX"]


# The label of an item without one (padding, a prompt, a later sub-token): what the Transformers collators pad labels
# with and what PyTorch's cross-entropy skips.
IGNORE_INDEX = -100


def _reduce(per_item: torch.Tensor, mask: torch.Tensor | None, num_items: float | torch.Tensor | None) -> torch.Tensor:
    """Sums `per_item` over the counted items and divides by `num_items` (default: how many items count)."""
    if mask is not None:
        mask = mask.to(per_item.device, torch.bool)
        if mask.shape != per_item.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(per_item.shape)}")
        per_item = per_item.masked_fill(~mask, 0.0)
        count = mask.sum()
    else:
        count = per_item.numel()
    total = per_item.sum()
    if num_items is None:
        num_items = count
    # Item counts are whole numbers; clamping at 1 makes an empty micro-batch (everything masked) contribute zero,
    # not NaN, without a host-device sync.
    if torch.is_tensor(num_items):
        return total / num_items.to(total.device, torch.float32).clamp_min(1.0)
    return total / max(float(num_items), 1.0)


def _item_weights(items: torch.Size, mask, num_items, device) -> torch.Tensor:
    """Each item's weight in the loss: 1 / num_items where it counts, 0 elsewhere (what `_reduce` sums with)."""
    if mask is not None:
        mask = mask.to(device, torch.bool)
        if mask.shape != items:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(items)}")
    denominator = (mask.sum() if mask is not None else items.numel()) if num_items is None else num_items
    if torch.is_tensor(denominator):
        denominator = denominator.to(device, torch.float32).clamp_min(1.0)
    else:
        denominator = max(float(denominator), 1.0)
    weights = torch.ones(items, device=device) if mask is None else mask.float()
    return weights / denominator


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}")
