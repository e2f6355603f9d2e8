"""Subspace ranking finds planted keys among random ones, and ranks count ties against the target."""

from __future__ import annotations

import torch

from attacks import spectral, subspace


def test_planted_keys_rank_first_among_random_ones():
    g = torch.Generator().manual_seed(0)
    cands = torch.randn(3000, 64, generator=g, dtype=torch.float64) + 1.0  # random keys with a common mean
    planted = [17, 1234, 2999]
    k = cands[planted] + 1e-3 * torch.randn(3, 64, generator=g, dtype=torch.float64)  # the edits' keys
    basis = spectral.basis_from_gram(k.T @ k, 3)
    scores = subspace.projection_scores(basis, cands)
    ranks = subspace.ranks_of(scores, planted)
    assert sorted(ranks) == [0, 1, 2]
    assert set(subspace.top(scores, 3)) == set(planted)


def test_random_subspace_gives_chance_level_ranks():
    g = torch.Generator().manual_seed(1)
    cands = torch.randn(2000, 64, generator=g, dtype=torch.float64)
    basis = torch.linalg.qr(torch.randn(64, 3, generator=g, dtype=torch.float64))[0]
    ranks = subspace.ranks_of(subspace.projection_scores(basis, cands), list(range(0, 2000, 20)))
    assert 500 < sum(ranks) / len(ranks) < 1500  # about N/2 for targets unrelated to the span


def test_ties_count_against_the_target():
    scores = torch.tensor([0.5, 0.9, 0.5, 0.1])
    assert subspace.ranks_of(scores, [0, 2, 1, 3]) == [2, 2, 0, 3]
