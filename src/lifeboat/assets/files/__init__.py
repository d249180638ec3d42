"""The `files` asset: directories and files with modes, times, owners and symlinks.

The package itself imports nothing: a policy with a files asset loads `model.py` alone
(`wal push`, `status`), the backup and restore code lives in `tree.py`."""
