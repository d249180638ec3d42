"""`python -m lifeboat`: the same as the `lifeboat` command."""

from lifeboat.cli.entry import main

main()
