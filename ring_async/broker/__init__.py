"""The central C3PO budget broker: prompt leasing, exactly-once rollout intake, group assembly, the staleness-bounded
pool and fixed-token train-batch emission (``core``), with exact accounting (``ledger``), prompt sources
(``prompts``), a write-ahead journal and delivery outbox (``journal``, ``durable``), and the Broker gRPC service over
the durable broker (``service``)."""
