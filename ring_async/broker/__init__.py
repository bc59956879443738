"""The central C3PO budget broker: prompt leasing, exactly-once rollout intake, group assembly, the staleness-bounded
pool and fixed-token train-batch emission (``core``), with exact accounting (``ledger``) and prompt sources
(``prompts``)."""
