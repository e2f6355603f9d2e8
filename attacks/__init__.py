"""Inversion attacks on what a session shares (keys, statistics, aggregates, ΔW, wire bytes) and the privacy audit.

This package imports the core (``secure_collab``); nothing in the core imports it. Its sub-commands reach the
command line through the ``secure_collab.commands`` entry-point group.
"""
