"""Samplers with a reproducible order, so that a resumed run sees exactly the same batches.

The order of epoch ``e`` is a permutation drawn from ``seed + e`` (torch's DistributedSampler),
split across processes; :class:`ResumableSampler` can skip the samples already consumed. (The
augmentation of sample ``i`` in epoch ``e`` is the dataset's business: swinkit.data draws it
from a generator seeded with ``(seed, e, i)``, see ``MediaDataset.set_epoch``.)
"""
from __future__ import annotations

from typing import Iterator

from torch.utils.data import Dataset, DistributedSampler, Sampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose current epoch can start after ``skip`` of this rank's samples."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int,
                 drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``, in order, without padding (exact evaluation)."""

    def __init__(self, num_items: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, num_items, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
