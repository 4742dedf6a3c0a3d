"""`python -m devtools.plivo_sim --port 8111 --auth-id A --auth-token T --play-calls`."""

import sys

from devtools.plivo_sim.server import main

sys.exit(main())
