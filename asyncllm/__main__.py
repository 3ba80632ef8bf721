"""``python -m asyncllm``: the ``asyncllm`` command line."""

import sys

from ._cli import main

sys.exit(main())
