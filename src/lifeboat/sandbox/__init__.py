"""The embedded sandbox platform behind `lifeboat demo` and the end-to-end tests:
local directories, a PostgreSQL cluster, a local S3 endpoint and key material, with a
policy written for them."""
