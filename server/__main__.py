"""`python -m server ...` is the same as `activelabel ...`."""

from .cli.main import main

main()
