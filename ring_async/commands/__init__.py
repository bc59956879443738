"""Sub-commands of the ``ring-async`` CLI, one module per domain (see ``ring_async.cli``)."""
