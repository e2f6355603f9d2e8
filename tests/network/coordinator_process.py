"""`python coordinator_process.py CONFIG`: a coordinator with the test-double scheme, as a real process."""

import json
import sys

from coordinator.server import run_coordinator
from secure_collab.config import load_config
from secure_collab.protection import get_scheme

if __name__ == "__main__":
    outcome = run_coordinator(load_config(sys.argv[1]), get_scheme("plain"))
    print(json.dumps({"ok": outcome.ok, "reason": outcome.reason,
                      "releases": {f"{r}/{lay}": sha for (r, lay), sha in outcome.releases.items()}}))
