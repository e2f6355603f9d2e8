"""Experiments (``secure-collab experiment``): the merge grid on one machine (``merge``, reported by
``merge_report``), and over several parties and rounds: forgetting, overlap and conflict (``rounds_report``)."""
