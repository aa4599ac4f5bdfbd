"""Streaming envelope encryption for S3 object bodies (pure library, no I/O)."""
