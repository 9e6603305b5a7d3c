"""``python -m galip_diffusers COMMAND ...`` is ``galip COMMAND ...``.

This is the ``-m`` entry point, not a library import: the command line (:mod:`galip_cli`) sits above galip_diffusers,
so it is looked up by name when this file runs as a script.
"""

import importlib
import sys

sys.exit(importlib.import_module("galip_cli.main").main())
