"""lifeboat: provable recoverability for PostgreSQL, object storage and key material."""

__version__ = "0.1.0"
