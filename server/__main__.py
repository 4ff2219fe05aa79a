"""`python -m server ...` is the same as `activelabel ...`."""

from .cli import main

main()
