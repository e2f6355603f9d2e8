#!/usr/bin/env bash
# docs/deploy.md on one machine: three institutions (parties a, b, c), a solver and a coordinator, each in its
# own directory holding only its own secret key and the public files the others sent. Every `secure-collab`
# line below is a command of the walk-through, run in the directory of the site that runs it.
# Exits 0 only when every party applied the same solver-signed ΔW.
#
# Usage: examples/three-sites.sh [--model M] [--workdir DIR] [--port P]
#   --model    base model every site holds (default smollm2-135m; tiny-llama takes a minute)
#   --workdir  where the five site directories go (default: a new temporary directory)
#   --port     the coordinator's port on 127.0.0.1 (default: a free one)
# SECURE_COLLAB: the command to run (default: secure-collab; e.g. ".venv/bin/python -m secure_collab").
set -euo pipefail

MODEL=smollm2-135m
WORK=""
PORT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --workdir) WORK="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "three-sites.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
read -r -a SC <<< "${SECURE_COLLAB:-secure-collab}"
secure-collab() { command "${SC[@]}" "$@"; }  # the command the walk-through uses (`command`: not this function)
PY=${PYTHON:-python3}
# a new temporary directory unless --workdir names one (the sites never land in the current directory)
if [ -z "$WORK" ]; then WORK=$(mktemp -d -t three-sites-XXXXXX); else mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd); fi
PORT=${PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
HOST=127.0.0.1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # five processes share this machine's cores
cd "$WORK"
mkdir -p coordinator/inbox solver-host site-a site-b site-c
say() { printf '\n== %s\n' "$*"; }

say "1. every site makes its own keys; only the public file leaves it"
(cd coordinator && secure-collab keys new --role coordinator) | tee coordinator/keys-new.txt
(cd solver-host && secure-collab keys new --role solver) | tee solver-host/keys-new.txt
(cd site-a && secure-collab keys new --role party --name a) | tee site-a/keys-new.txt
(cd site-b && secure-collab keys new --role party --name b) | tee site-b/keys-new.txt
(cd site-c && secure-collab keys new --role party --name c) | tee site-c/keys-new.txt
# the second channel: every site writes down the fingerprint lines it heard (here: read from each output)
grep -h '^fingerprint: ' */keys-new.txt | cut -d' ' -f2- > agreed-fingerprints.txt
for site in coordinator solver-host site-a site-b site-c; do cp agreed-fingerprints.txt "$site/"; done
cp solver-host/keys/solver.public.toml site-*/keys/party-*.public.toml coordinator/keys/coordinator.public.toml \
   coordinator/inbox/

say "2. the coordinator assembles the roster from the public files and writes the session file"
(cd coordinator && secure-collab keys roster --out roster.toml inbox/*.public.toml)
(cd coordinator && secure-collab session init --model "$MODEL" --roster roster.toml \
    --bind "tcp://$HOST:$PORT" --endpoint "tcp://$HOST:$PORT" --out session.toml)
for site in solver-host site-a site-b site-c; do cp coordinator/roster.toml coordinator/session.toml "$site/"; done

say "3. every site checks the roster against the fingerprints it agreed to, and reads the session's digest"
for site in coordinator solver-host site-a site-b site-c; do
  (cd "$site" && secure-collab keys check --roster roster.toml --fingerprints agreed-fingerprints.txt)
  (cd "$site" && secure-collab session show --config session.toml) | grep 'config digest' | sed "s/^/$site: /"
done

say "4. each institution writes its own edit requests"
cat > site-a/requests.jsonl <<'JSONL'
{"subject": "France", "prompt": "The capital of {} is", "target_new": "Lyon", "target_true": "Paris"}
{"subject": "Japan", "prompt": "The capital of {} is", "target_new": "Osaka", "target_true": "Tokyo"}
JSONL
cat > site-b/requests.jsonl <<'JSONL'
{"subject": "Italy", "prompt": "The capital of {} is", "target_new": "Milan", "target_true": "Rome"}
{"subject": "Spain", "prompt": "The capital of {} is", "target_new": "Seville", "target_true": "Madrid"}
JSONL
cat > site-c/requests.jsonl <<'JSONL'
{"subject": "Germany", "prompt": "The capital of {} is", "target_new": "Munich", "target_true": "Berlin"}
{"subject": "Canada", "prompt": "The capital of {} is", "target_new": "Toronto", "target_true": "Ottawa"}
JSONL

say "5. run: the solver, the coordinator and the three parties (logs in each site's directory)"
(cd solver-host && secure-collab solver --config session.toml > solver.log 2>&1) & solver=$!
(cd coordinator && secure-collab coordinator --config session.toml > coordinator.log 2>&1) & coordinator=$!
(cd site-a && secure-collab party --config session.toml --name a --requests requests.jsonl \
    --patch patch.safetensors --json report.json > party.log 2>&1) & party_a=$!
(cd site-b && secure-collab party --config session.toml --name b --requests requests.jsonl \
    --patch patch.safetensors --json report.json > party.log 2>&1) & party_b=$!
(cd site-c && secure-collab party --config session.toml --name c --requests requests.jsonl \
    --patch patch.safetensors --json report.json > party.log 2>&1) & party_c=$!
# while the five roles run: every 15 s, who is still running and the last line of its log (no silent wait)
declare -A pids=([solver-host]=$solver [coordinator]=$coordinator [site-a]=$party_a [site-b]=$party_b [site-c]=$party_c)
status=0
while [ ${#pids[@]} -gt 0 ]; do
  for site in "${!pids[@]}"; do
    if ! kill -0 "${pids[$site]}" 2>/dev/null; then
      if wait "${pids[$site]}"; then echo "   $site: done"; else echo "   $site: FAILED (see $site/*.log)"; status=1; fi
      unset "pids[$site]"
    fi
  done
  [ ${#pids[@]} -gt 0 ] || break
  sleep 1; waited=$(( ${waited:-0} + 1 ))
  if [ $(( waited % 15 )) -eq 0 ]; then
    for site in "${!pids[@]}"; do echo "   $site: running ($(tail -n 1 "$site"/*.log 2>/dev/null | cut -c1-110))"; done
  fi
done
for site in solver-host coordinator site-a site-b site-c; do
  echo "-- $site: last lines of its log"; tail -n 4 "$site"/*.log
done
[ "$status" = 0 ] || { echo "three-sites.sh: a role failed (logs above, all in $WORK)" >&2; exit 1; }

say "6. each institution applies the signed ΔW to its base model"
(cd site-a && secure-collab apply --model "$MODEL" --patch patch.safetensors --out edited-model)

say "7. every party applied the same solver-signed ΔW, and no site holds another's secret key"
"$PY" - "$WORK" <<'PYEOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
reports = {p: json.loads((work / f"site-{p}" / "report.json").read_text()) for p in "abc"}
applied = {p: r["applied"] for p, r in reports.items()}
if not all(r["ok"] for r in reports.values()) or not applied["a"] or len({json.dumps(a, sort_keys=True) for a in applied.values()}) != 1:
    sys.exit(f"parties differ or failed: {applied}")
own = {"coordinator": "coordinator", "solver-host": "solver", "site-a": "party-a", "site-b": "party-b", "site-c": "party-c"}
for site, stem in own.items():
    secrets = sorted(p.name for p in (work / site).rglob("*.key_secret"))
    if secrets != [f"{stem}.key_secret"]:
        sys.exit(f"{site} holds {secrets}, want only its own {stem}.key_secret")
print(f"every party applied the same {len(applied['a'])} signed releases: "
      + ", ".join(f"{k} {v[:12]}" for k, v in applied["a"].items()))
PYEOF
echo "three-sites.sh: ok ($WORK)"
