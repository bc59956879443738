"""Generated gRPC code of the ring-async contracts (package ``ring_async.v1``, sources in ``proto/ring_async/v1``).

Do not edit the ``*_pb2*`` modules: change the .proto and run ``make proto``. They are checked in so that installing
ring-async needs no code generation; ``tests/test_proto.py`` fails when they are out of date.
"""
