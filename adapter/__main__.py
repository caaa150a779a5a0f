"""`python -m adapter` runs the lac-adapter command."""

from .cli import main

main()
