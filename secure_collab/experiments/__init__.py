"""Experiments over several parties and rounds: forgetting, overlap and conflict (``secure-collab experiment``)."""
