"""MEMIT math over parties and rounds. ``UPDATE_RULES`` names the rules of ``rules.py`` (kept here, free of torch,
so the configuration can check a name without loading the math)."""

UPDATE_RULES = ("memit-static", "memit-dynamic", "alphaedit")


def uses_past(update_rule: str, rounds: int) -> bool:
    """Whether the solve of a session reads Σ of the earlier rounds' ΣG (so the solver keeps it across rounds).

    Only a rule that reads it (every rule but ``memit-static``), and only with earlier rounds to read: in a
    session of one round there is no past, so nothing is kept. The one place this is decided (the solver asks
    here; torch-free like ``UPDATE_RULES``, so the solver process does not load the math to ask)."""
    if update_rule not in UPDATE_RULES:
        raise ValueError(f"update rule must be one of {UPDATE_RULES}, got {update_rule!r}")
    return update_rule != "memit-static" and rounds > 1
