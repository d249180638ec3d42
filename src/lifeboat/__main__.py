"""`python -m lifeboat`: the same as the `lifeboat` command."""

from lifeboat.cli.app import main

main()
