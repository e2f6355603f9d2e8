"""TIES as CollabEdit's code runs it, on a hand-checked example."""

import torch

from secure_collab.editing.merges import simple_average, task_arithmetic, ties


def test_ties_trims_elects_resolves_zero_signs_and_averages_disjointly():
    d1 = torch.tensor([[4.0, -1.0, 2.0, 3.0, 0.0]])
    d2 = torch.tensor([[2.0, -5.0, -2.0, -1.0, 0.2]])
    d3 = torch.tensor([[-1.0, 0.3, 0.0, 2.0, 6.0]])
    # density 0.4: ⌊5·0.4⌋ = 2, keep |x| ≥ the 3rd smallest magnitude: d1 {4, 2, 3}, d2 {2, -5, -2}, d3 {-1, 2, 6}
    # summed kept mass: [5, -5, 0, 5, 6]; the zero of column 2 takes the majority sign of the others (+)
    out = ties([d1, d2, d3], density=0.4, scale=1.0)
    # col0: 4, 2 -> 3; col1: -5; col2: 2 (the +2 of d1, not the -2 of d2); col3: 3, 2 -> 2.5; col4: 6
    torch.testing.assert_close(out, torch.tensor([[3.0, -5.0, 2.0, 2.5, 6.0]]))
    torch.testing.assert_close(ties([d1, d2, d3], density=0.4, scale=0.4), 0.4 * out)


def test_ties_zero_sign_without_a_majority_keeps_negative_values():
    # kept mass [1, -1, 0]: no majority, the elected zero stays and CollabEdit's where(sign > 0, x > 0, x < 0)
    # then keeps the negative entries of that column
    a = torch.tensor([1.0, 0.0, 3.0])
    b = torch.tensor([0.0, -1.0, -3.0])
    out = ties([a, b], density=1.0, scale=1.0)
    torch.testing.assert_close(out, torch.tensor([1.0, -1.0, -3.0]))


def test_sum_and_mean():
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 4.0])
    torch.testing.assert_close(task_arithmetic([a, b]), torch.tensor([4.0, 2.0]))
    torch.testing.assert_close(simple_average([a, b]), torch.tensor([2.0, 1.0]))
