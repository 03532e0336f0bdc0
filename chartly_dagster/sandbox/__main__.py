"""`python -m chartly_dagster.sandbox [serve options]`: the sandbox without the main CLI."""

import sys

from .cli import serve_main

sys.exit(serve_main(sys.argv[1:]))
