"""Engines: the compute cores that actors host (generation; learners and verifiers live beside them)."""
