"""`python -m pipeline.runtime.supervisor`: the detached supervisor (config as JSON on stdin)."""
import sys

from pipeline.runtime.supervisor.core import main

sys.exit(main())
