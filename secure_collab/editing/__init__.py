"""MEMIT math over parties and rounds. ``UPDATE_RULES`` names the rules of ``rules.py`` (kept here, free of torch,
so the configuration can check a name without loading the math)."""

UPDATE_RULES = ("memit-static", "memit-dynamic", "alphaedit")
