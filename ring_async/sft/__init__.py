"""The distillation stage: SFT on teacher responses with DeepSpeed, and choosing the checkpoint RL starts from by
token entropy (docs/policy.md). ``pipeline.prepare_policy(config)`` runs it end to end, cached."""
