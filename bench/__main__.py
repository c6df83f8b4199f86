"""Lets `python -m bench ...` behave exactly like the `bench` script."""

import sys

from bench.cli import main

sys.exit(main())
