"""Unit tests: no engine, no network beyond loopback."""
