"""What `secure-collab edit` and its multi-round form (cli/edit_rounds.py) share: the hyper-parameters from the
options, and the saved edited model. One home, so the two commands never import each other."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def build_hparams(args: argparse.Namespace, model_name: str, n_layers: int, device_type: str = "cpu"):
    from secure_collab.editing.hparams import auto_request_batch, default_hparams

    hp = default_hparams(model_name, n_layers)
    changes = {"request_batch": args.request_batch if args.request_batch is not None
               else auto_request_batch(device_type)}
    if args.layers is not None:
        changes["layers"] = tuple(args.layers)
    for attr, field in (("lam", "mom2_update_weight"), ("steps", "v_num_grad_steps"),
                        ("template_seed", "template_seed"), ("tokens", "mom2_tokens"), ("variant", "variant"),
                        ("update_rule", "update_rule"), ("past_weight", "mom2_past_weight"),
                        ("nullspace_threshold", "nullspace_threshold"), ("alphaedit_l2", "alphaedit_l2")):
        if getattr(args, attr, None) is not None:
            changes[field] = getattr(args, attr)
    return hp.with_(**changes)


def reference_then_edit(args: argparse.Namespace, lm, saved: dict, say: Callable[[str], Any],
                        run: Callable[[str], Any]) -> tuple[Any, Any, float]:
    """(outcome of ``run(args.method)``, the Global-Edit reference or None, seconds of the edit): the reference runs
    first on the unedited weights (``saved``, restored after it) unless --no-compare or the method is global."""
    import time

    from secure_collab.editing.memit import restore

    reference = None
    if args.method != "global" and not args.no_compare:
        say("Global-Edit reference (all requests on one machine)")
        reference = run("global")
        restore(lm, saved)
    t = time.perf_counter()
    outcome = run(args.method)
    t_edit = time.perf_counter() - t
    return outcome, outcome if args.method == "global" else reference, t_edit


def save_edited(lm, deltas, out: Path, result: dict) -> None:
    """The edited model (``from_pretrained`` loads it) and patch.safetensors (secure_collab.patch, round 0)."""
    from secure_collab.files import private_dir
    from secure_collab.patch import write_patch

    private_dir(out)  # the edited model carries the edits: a 0700 directory
    lm.model.save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    write_patch(out / "patch.safetensors", lm, {(0, k): v for k, v in deltas.items()},
                {"method": result["method"], "variant": result["variant"]})


METRICS = ("efficacy", "generalization", "specificity", "score")


def edit_result(args: argparse.Namespace, lm, requests: list, pre, post, deltas: dict, reference_deltas: dict | None,
                t_start: float, t_edit: float, **extra) -> dict:
    """The result every single-machine edit reports (either backend): metrics before and after, ΔW against
    Global-Edit per layer, timings, the model; ``extra`` adds the backend's own fields (hparams, targets, rows)."""
    import time

    from secure_collab.editing.memit import rel_diff_per_layer

    per_layer = None if reference_deltas is None else rel_diff_per_layer(deltas, reference_deltas)
    return {
        "method": args.method, "parties": args.parties, "edits": len(requests),
        **{k: post.summary()[k] for k in METRICS}, "pre": {k: pre.summary()[k] for k in METRICS},
        "delta_rel_diff_vs_global": None if per_layer is None else max(per_layer.values()),
        "delta_rel_diff_per_layer": None if per_layer is None else {str(k): v for k, v in per_layer.items()},
        "seconds": time.perf_counter() - t_start, "edit_seconds": t_edit,
        "model": args.model, "dtype": str(next(lm.model.parameters()).dtype).removeprefix("torch."),
        "device": str(lm.device), **extra,
        "delta_norm": {str(k): float(v.norm()) for k, v in deltas.items()},
        "counts": post.counts, "skipped": post.skipped,
    }


def finish(args: argparse.Namespace, console, lm, deltas: dict, result: dict) -> int:
    """Save the edited model when asked, show the table, write --json."""
    from secure_collab.cli._output import write_json

    if args.save:
        save_edited(lm, deltas, Path(args.save), result)
        result["saved_model"] = str(Path(args.save).resolve())
    show(console, result)
    write_json(args, result)
    return 0


def show(console, r: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{r['method']} / {r['variant']}: {r['edits']} edits, {r['parties']} parties")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")

    def fmt(x):
        return "-" if x is None else f"{x:.3f}"

    for k in ("efficacy", "generalization", "specificity", "score"):
        table.add_row(k, fmt(r["pre"][k]), fmt(r[k]))
    console.print(table)
    d = r["delta_rel_diff_vs_global"]
    console.print(f"ΔW vs Global-Edit: {'-' if d is None else f'{d:.2e}'} (max relative Frobenius over layers); "
                  f"{r['seconds']:.1f} s")
