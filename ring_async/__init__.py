"""ring-async: actor-based asynchronous RL post-training with C3PO fixed-token-budget policy optimisation."""

__version__ = "0.1.0"
