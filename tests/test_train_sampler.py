"""train.group_by_length: less padding, and the same rows per optimizer step for 1 or N processes."""

import random

import torch

from slmake.train import length_grouped_sampler


def _padding(order: list[int], lengths: list[int], batch: int) -> float:
    """Fraction of a padded batch's cells that are padding (TRL pads each batch to its longest row)."""
    padded = real = 0
    for i in range(0, len(order), batch):
        rows = [lengths[j] for j in order[i:i + batch]]
        padded += max(rows) * len(rows)
        real += sum(rows)
    return 1 - real / padded


def _order(lengths, per_device, processes, accum, seed=0) -> list[int]:
    torch.manual_seed(seed)
    return list(iter(length_grouped_sampler(lengths, per_device, processes, accum)))


def test_grouping_cuts_padding_and_keeps_every_row_once():
    rng = random.Random(0)
    lengths = [rng.randint(20, 110) for _ in range(1600)]
    grouped = _order(lengths, 8, 1, 1)
    assert sorted(grouped) == list(range(len(lengths)))      # a permutation: no row lost or repeated
    torch.manual_seed(0)
    shuffled = torch.randperm(len(lengths)).tolist()
    assert _padding(shuffled, lengths, 8) > 0.2
    assert _padding(grouped, lengths, 8) < 0.02


def test_one_process_and_two_see_the_same_rows_per_step():
    rng = random.Random(1)
    lengths = [rng.randint(5, 60) for _ in range(300)]
    one = _order(lengths, 8, 1, 1)
    two = _order(lengths, 4, 2, 1)
    accum = _order(lengths, 2, 2, 2)
    assert one == two == accum        # the grouping follows the global batch only
    other_seed = _order(lengths, 8, 1, 1, seed=1)
    assert other_seed != one          # the order still comes from the seeded RNG
