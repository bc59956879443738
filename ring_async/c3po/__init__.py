"""C3PO, the algorithm: group advantages, fixed-token-budget selection and the policy loss.

Pure numpy/torch, no Ray and no network, so every piece is testable on its own:

- ``advantages``: GRPO group-normalised advantages.
- ``budget``: greedy selection of responses into a budget of Φ loss tokens (``exact`` cut or ``whole`` responses).
- ``loss``: the clipped policy loss with ``c3po`` / ``grpo`` / ``token_mean`` aggregation, entropy bonus, k3 KL and
  the off-policy corrections.
- ``moe``: MoE router load-balance and z-loss terms.
"""
