"""`python -m stillhouse_local.runpod_standin`: the stand-in's command line."""
import sys

from stillhouse_local.runpod_standin.engine import main

sys.exit(main())
