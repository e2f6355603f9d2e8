"""`secure-collab apply --model M --patch P --out DIR`: write the base model plus a ΔW patch as a model directory."""

from __future__ import annotations

import argparse

from secure_collab.cli._output import add_json_option

HELP = "apply a ΔW patch (safetensors) to its base model and save a model that from_pretrained loads"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the patch's base model: a built-in name, directory or hub id")
    parser.add_argument("--patch", required=True, help="ΔW patch written by `party --patch` or `edit --save`")
    parser.add_argument("--out", required=True, help="directory for the edited model (created)")
    parser.add_argument("--dtype", default="auto", help="dtype to load and save in: auto, float32, float64")
    parser.add_argument("--cache-dir", default=None, help="cache root (default: $SECURE_COLLAB_CACHE or ~/.cache)")
    parser.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from secure_collab.cli._output import say, write_json
    from secure_collab.files import check_writable, private_dir
    from secure_collab.models import load_model
    from secure_collab.patch import apply_patch, read_patch

    patch = read_patch(Path(args.patch))  # before the model: a bad file fails at once
    check_writable(args.out, "--out", directory=True)
    check_writable(getattr(args, "json", None), "--json")
    lm = load_model(args.model, device="cpu", cache=args.cache_dir, dtype=args.dtype,
                    allow_download=args.allow_download)
    apply_patch(lm, patch)
    out = private_dir(Path(args.out))  # the patched model carries the edits: a 0700 directory
    lm.model.save_pretrained(out)  # type: ignore[operator]  # a transformers PreTrainedModel
    lm.tokenizer.save_pretrained(out)
    info = {"model": args.model, "patch": str(args.patch), "out": str(out.resolve()),
            "base_digest": patch.base_digest, "layers": sorted(patch.per_layer()),
            "rounds": sorted({r for r, _ in patch.deltas}),
            "release_sha256": {f"{e.round}/{e.layer}": e.release_sha256 for e in patch.entries}}
    say(args, f"applied {len(patch.entries)} ΔW (layers {info['layers']}) to {args.model}; saved to {out}")
    write_json(args, info)
    return 0
