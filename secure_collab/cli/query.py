"""`secure-collab query --config F --name a --prompt P --candidates "Paris,Rome"`: ask a served release's model.

One query per run, encrypted to the solver on this party's channel (the coordinator relays it unread), answered by
the edited model that only the solver's host holds; prints the answer and what is left of the party's budget.
Run it after the party's own `secure-collab party` process has ended: the coordinator answers a party on its newest
connection.
"""

from __future__ import annotations

import argparse

HELP = "ask a served release's edited model (logprobs of candidates, or greedy tokens); prints the budget left"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secure_collab.cli._roles import add_role_options

    add_role_options(parser, model=False)
    parser.add_argument("--name", required=True, help="this party's roster name")
    parser.add_argument("--prompt", default=None, help="the prompt (default: none; required unless --done)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--candidates", default=None,
                      help="comma-separated continuations whose log-probabilities after the prompt to ask for (one "
                           "forward pass of the budget each) (default: none)")
    what.add_argument("--generate", type=int, default=None, metavar="N",
                      help="greedy tokens to generate after the prompt (N forward passes of the budget) "
                           "(default: none)")
    what.add_argument("--done", action="store_true",
                      help="tell the solver this party asks nothing more (serving ends when every party is done)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for the answer (default: the session's solve_timeout_s)")


def _query(args: argparse.Namespace) -> dict:
    from secure_collab.errors import ConfigError

    if args.done:
        return {"kind": "done"}
    if not args.prompt or (args.candidates is None and args.generate is None):
        raise ConfigError("give --prompt and either --candidates or --generate (or --done)")
    if args.generate is not None:
        return {"kind": "generate", "prompt": args.prompt, "max_tokens": args.generate}
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    return {"kind": "logprobs", "prompt": args.prompt, "candidates": candidates}


def run(args: argparse.Namespace) -> int:
    from parties.queries import QueryClient
    from secure_collab.cli._output import human, write_json
    from secure_collab.cli._roles import require_secret
    from secure_collab.config import load_config
    from secure_collab.errors import ConfigError
    from secure_collab.protocol.query import check_query
    from secure_collab.protocol.schema import ProtocolError

    config = load_config(args.config)
    if not config.session.served:
        raise ConfigError(f"session {config.session.id}'s release is {config.session.release!r}: only a served "
                          "release answers queries (every party holds ΔW itself)")
    if args.name not in config.roster.parties:
        raise ConfigError(f"party {args.name!r} is not in the roster (parties: "
                          f"{', '.join(sorted(config.roster.parties))})")
    require_secret(config.paths.keys / f"party-{args.name}.key_secret", f"party {args.name}",
                   config.roster.parties[args.name])
    query = _query(args)
    try:
        check_query(query)  # before anything is sent or a counter is taken
    except ProtocolError as exc:
        raise ConfigError(f"not a query this session answers: {exc}") from None
    with QueryClient(config, args.name) as client:
        answer = client.ask(query, args.timeout)
    out = human(args)
    if not answer["ok"]:
        print(f"refused: {answer['reason']}", file=out)
    elif query["kind"] == "logprobs":
        width = max(len(c) for c in query["candidates"])
        for c, lp, n in zip(query["candidates"], answer["logprobs"], answer["tokens"], strict=True):
            print(f"{c:<{width}}  log P {lp:10.4f}  ({n} tokens, mean per token {lp / n:.4f})", file=out)
    elif query["kind"] == "generate":
        print(f"{query['prompt']}{answer['text']}", file=out)
    else:
        print("done: the solver answers no more queries of this party", file=out)
    if answer.get("used") is not None:
        print(f"budget: {answer['used']} of {answer['budget']} forward passes used, "
              f"{answer['budget'] - answer['used']} left", file=out)
    write_json(args, {"party": args.name, "session": config.session.id, "query": query, "answer": answer},
               private=True)  # the query and its answer are this party's own
    return 0 if answer["ok"] else 1
