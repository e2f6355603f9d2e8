"""`python -m secure_collab` is the `secure-collab` command."""

import sys

from secure_collab.cli import main

sys.exit(main())
