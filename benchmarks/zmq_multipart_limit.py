"""What libzmq buffers before the coordinator's code sees a message: frames are bounded, frames per message not.

    PYTHONPATH=. .venv/bin/python benchmarks/zmq_multipart_limit.py --json benchmarks/results/zmq_multipart_limit.json

A ROUTER with MAXMSGSIZE 1 MiB and RCVHWM 2 (the coordinator's kind of limits, scaled down) receives, in
this process, from a peer that never ends a multipart message: a hand-written ZMTP 3.0 client (NULL
mechanism: a roster party could do the same inside CURVE with its own ZMTP stack) sends ``--frames`` frames
of 512 KiB, each under MAXMSGSIZE, all with the MORE flag. libzmq keeps them all (a multipart message is
delivered whole or not at all) and the receiver's resident memory grows by their size; nothing reaches
``recv``. A second run ends the message: it is then delivered, all of it at once.
This is the written limit of docs/threat-model.md: the defence is an operating-system memory limit on the
coordinator process (it resumes from its ledger after a restart).
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from pathlib import Path

import zmq


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _zmtp_null_client(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\x00" + b"\0" * 31)
    props = b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    body = b"\x05READY" + props
    conn.sendall(b"\x04" + bytes([len(body)]) + body)
    conn.recv(64)  # the server's greeting
    return conn


def run(frames: int, end: bool) -> dict:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
    router.setsockopt(zmq.RCVHWM, 2)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    before = rss_mb()
    conn = _zmtp_null_client(port)
    chunk = b"x" * (512 << 10)
    for i in range(frames):
        more = not end or i < frames - 1
        conn.sendall(bytes([0x03 if more else 0x02]) + struct.pack(">Q", len(chunk)) + chunk)  # LONG (| MORE)
    time.sleep(1.0)
    grown = rss_mb()
    delivered = router.poll(1000)
    parts = len(router.recv_multipart()) if delivered else 0
    conn.close()
    router.close(linger=0)
    ctx.term()
    return {"frames_sent": frames, "frame_bytes": len(chunk), "message_ended": end,
            "receiver_rss_mb_before": round(before, 1), "receiver_rss_mb_after": round(grown, 1),
            "rss_growth_mb": round(grown - before, 1), "delivered_parts": parts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=1200)
    p.add_argument("--json", default=None, metavar="OUT", help="write the figures as JSON ('-' for stdout)")
    args = p.parse_args()
    result = {"zmq": zmq.zmq_version(), "maxmsgsize": 1 << 20, "rcvhwm": 2,
              "never_ended": run(args.frames, end=False), "ended": run(args.frames, end=True)}
    text = json.dumps(result, indent=1)
    if args.json in (None, "-"):
        print(text)
    else:
        Path(args.json).write_text(text + "\n")
        print(text, file=sys.stderr)


if __name__ == "__main__":
    main()
