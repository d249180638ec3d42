"""The key-material test environment is shared by every test module here."""

from tests.keys.test_keys import env  # noqa: F401  (a fixture)
