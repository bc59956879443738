"""Ray actors: thin shells that host one core object (broker, generator, verifier, learner) and its gRPC server.

The cores live in ``ring_async`` and are tested without Ray; an actor only places the core on the cluster
(resources, restarts), starts its server and reports its address.
"""
