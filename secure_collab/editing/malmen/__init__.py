"""MALMEN (Tan et al., ICLR 2024) as the second editing backend: a public hypernetwork maps each answer token's
(key u, value gradient ∇v) to a value difference d, and the shift solves a ridge least squares over every edited
token. Per layer a party contributes UᵀU (d_k, d_k) and DᵀU (d_v, d_k): MEMIT's G and B, so the aggregation,
protection and solver are shared; the solve uses e^{λ_l} I where MEMIT uses λC (``solve.py``).

Modules: ``hparams`` (which layers, the network's size), ``net`` (the hypernetwork, its frozen normaliser and
digest), ``rows`` (one forward and backward pass per edit: u and ∇v at every answer token), ``edit`` (the
statistics, the solve, ΔW and the edit over parties), ``train`` (meta-training on public records).
"""
