"""`secure-collab stats`: build (or load from the cache) the covariance C_l per layer and print what it is."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "build or load the covariance C_l = E[kk^T] of the down-projection input and inspect it"


def parse_layers(text: str) -> list[int]:
    """'3-7' -> [3..7]; '3,5,7' -> [3, 5, 7]; mixed '1,3-4' works too."""
    layers: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                layers.update(range(lo, hi + 1))
            elif part:
                layers.add(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad layer list {text!r}; use e.g. 3-7 or 3,4,5") from None
    if not layers or min(layers) < 0:
        raise argparse.ArgumentTypeError(f"bad layer list {text!r}")
    return sorted(layers)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from secure_collab.cli._output import add_json_option
    from secure_collab.cli._roles import THREADS_HELP
    from secure_collab.covariance import DEFAULT_BATCH_SIZE, DEFAULT_MAX_SEQ_LEN, DEFAULT_TOKENS

    p.add_argument("--model", default="smollm2-135m",
                   help="smollm2-135m, tiny-gpt2, tiny-llama, a directory or a hub id")
    p.add_argument("--layers", type=parse_layers, default=parse_layers("3-7"), help="edited layers, e.g. 3-7 or 3,4,5")
    p.add_argument("--corpus", default=None, help="'wikipedia' (default) or a .txt / .jsonl file")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="token budget")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="texts per forward pass")
    p.add_argument("--max-seq-len", type=int, default=DEFAULT_MAX_SEQ_LEN, help="tokens per text at most")
    p.add_argument("--order-seed", type=int, default=0, help="document shuffle seed (-1: file order)")
    p.add_argument("--cache-dir", default=None, help="cache root (default $SECURE_COLLAB_CACHE or ~/.cache)")
    p.add_argument("--no-cache", action="store_true", help="compute without reading or writing the cache")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0, ...")
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded")
    add_json_option(p)


def describe(cov, eig_floor: float = 0.0) -> dict:
    """Shape, trace and eigenvalue range of a symmetric (d_k, d_k) matrix."""
    import torch

    ev = torch.linalg.eigvalsh(cov.to(torch.float64))  # ascending
    lo, hi = float(ev[0]), float(ev[-1])
    return {"shape": list(cov.shape), "trace": float(cov.trace()), "eig_min": lo, "eig_max": hi,
            "condition": hi / lo if lo > eig_floor else float("inf"),
            "symmetric_err": float((cov - cov.T).abs().max())}


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from secure_collab.cli._output import say, write_json
    from secure_collab.cli._roles import set_threads
    from secure_collab.covariance import covariance_entries
    from secure_collab.models import load_model

    set_threads(args.threads)
    cache = Path(args.cache_dir) if args.cache_dir else None
    loaded = load_model(args.model, device=args.device, cache=cache, allow_download=args.allow_download)
    t0 = time.perf_counter()
    entries = covariance_entries(
        loaded, args.layers, corpus=args.corpus, tokens=args.tokens, batch_size=args.batch_size,
        max_seq_len=args.max_seq_len, cache=args.cache_dir, use_cache=not args.no_cache,
        order_seed=None if args.order_seed < 0 else args.order_seed, progress=not args.quiet,
    )
    seconds = time.perf_counter() - t0
    rows = []
    for layer, e in entries.items():
        row = {"layer": layer, "tokens": e.tokens_used, "token_budget": e.key.tokens, **describe(e.cov),
               "from_cache": e.from_cache, "cache_file": str(e.path) if e.path else None,
               "sha256": e.file_sha256, "key_digest": e.key.digest()}
        rows.append(row)
        say(args, f"layer {layer:>3}  shape {tuple(row['shape'])}  tokens {e.tokens_used}  "
                  f"trace {row['trace']:.4g}  eig [{row['eig_min']:.3g}, {row['eig_max']:.3g}]  "
                  f"cond {row['condition']:.3g}  "
                  f"{'cached' if e.from_cache else 'built'}")
        if e.path:
            say(args, f"           {e.path}  sha256 {e.file_sha256}")
    computed = [e for e in entries.values() if not e.from_cache]
    if computed:
        say(args, f"built {len(computed)} layer(s) from {computed[0].tokens_used} tokens in {seconds:.1f} s "
                  f"({computed[0].tokens_used / seconds:.0f} tokens/s, {torch.get_num_threads()} thread(s))")
    write_json(args, {"model": args.model, "model_digest": loaded.source_digest,
                      "corpus_digest": next(iter(entries.values())).key.corpus_digest,
                      "max_seq_len": next(iter(entries.values())).key.max_seq_len,
                      "seconds": seconds, "layers": rows})
    return 0
