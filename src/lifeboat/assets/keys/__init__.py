"""The `keys` asset: key material captured with modes, owners and fingerprints; restored
only with the escrow threshold of custodians' shares; reports show fingerprints, never
contents.

The package itself imports nothing (a policy loads `model.py` alone); capture and restore
live in `capture.py`."""
