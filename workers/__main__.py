"""`python -m workers`: one worker process running many turns at once on gevent.

gevent must patch the standard library before anything else is imported, so that
sockets, threads and Redis connections cooperate; that is all this file does before
handing over to `workers.main`.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

from workers.main import main  # noqa: E402

sys.exit(main(os.environ))
