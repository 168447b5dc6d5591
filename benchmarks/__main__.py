"""`python -m benchmarks run --customers N`: the scale benchmark (see benchmarks.suite)."""

import sys

from benchmarks.suite import main

sys.exit(main())
