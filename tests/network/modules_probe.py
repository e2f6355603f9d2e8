"""`python modules_probe.py OUT ARGS...`: run `secure-collab ARGS...` in this process, then write the names of every
module it loaded to OUT (JSON), at exit. For the test that the coordinator never loads secret-handling code."""

import atexit
import json
import sys
from pathlib import Path

if __name__ == "__main__":
    out = Path(sys.argv[1])
    atexit.register(lambda: out.write_text(json.dumps(sorted(sys.modules))))
    from secure_collab.cli import main

    sys.exit(main(sys.argv[2:]))
