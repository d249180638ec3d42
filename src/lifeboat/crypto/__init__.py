"""Keys and ciphers: data encryption, write-only backup keys, recovery key, escrow, signatures."""
