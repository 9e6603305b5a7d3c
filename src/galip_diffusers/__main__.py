"""``python -m galip_diffusers COMMAND ...`` is ``galip COMMAND ...``."""

import sys

from .cli import main

sys.exit(main())
