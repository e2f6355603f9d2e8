"""Coordinator runtime (ROUTER server that only adds protected payloads) and the solver process."""
