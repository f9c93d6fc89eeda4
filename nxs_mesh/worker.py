"""``python -m nxs_mesh.worker``: the light worker entry (see ``nxs_mesh.node.worker``)."""

import sys

from nxs_mesh.node.worker import main

if __name__ == "__main__":
    sys.exit(main())
