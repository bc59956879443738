"""Engines: the compute cores that actors host: generation and training (verifiers live in ring_async.verifiers)."""
