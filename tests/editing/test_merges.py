"""TIES on a hand-checked example."""

import torch

from secure_collab.editing.merges import ties


def test_ties_trims_elects_and_averages_disjointly():
    d1 = torch.tensor([[4.0, -1.0, 0.5, 3.0, 0.0]])
    d2 = torch.tensor([[2.0, -5.0, 0.1, -1.0, 0.2]])
    d3 = torch.tensor([[-1.0, 0.3, 0.0, 2.0, -6.0]])
    # density 0.4 keeps 2 of 5 per party: d1 {4, 3}, d2 {2, -5}, d3 {2, -6}
    out = ties([d1, d2, d3], density=0.4, scale=1.0)
    # col0: 4, 2 (+) -> 3; col1: -5 -> -5; col3: 3, 2 (+) -> 2.5; col4: -6 -> -6
    torch.testing.assert_close(out, torch.tensor([[3.0, -5.0, 0.0, 2.5, -6.0]]))
    torch.testing.assert_close(ties([d1, d2, d3], density=0.4, scale=0.4), 0.4 * out)
