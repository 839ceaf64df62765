"""Seeded, stratified splits of a label vector."""

import torch


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices into (kept, held_out), stratified by label.

    Each class gives ``round(fraction * count)`` samples to the held-out part,
    at least one when the class has two or more samples, so that every class
    with enough samples appears on both sides. The same labels, fraction and
    seed always give the same split. Both index tensors are sorted.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"expected a split fraction in (0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    kept, held_out = [], []
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = round(fraction * len(members))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        held_out.append(members[:count])
        kept.append(members[count:])
    return torch.sort(torch.cat(kept)).values, torch.sort(torch.cat(held_out)).values
