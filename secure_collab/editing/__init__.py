"""MEMIT's pieces as tensor-in, tensor-out functions: keys, targets, statistics, solve, merges, orchestration."""
