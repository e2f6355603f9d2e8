"""Benchmarks behind `secure-collab bench`, `secure-collab protection-check` and BENCHMARKS.md."""
