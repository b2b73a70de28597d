"""``python -m langchain_glimprouter.cli``: the ``glimprouter`` command."""

import sys

from langchain_glimprouter.cli.main import main

sys.exit(main())
