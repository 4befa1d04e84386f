"""Integration tests: the local engine, PostgreSQL, S3, simulated servers, a browser."""
