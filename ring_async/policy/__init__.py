"""The policy as a Hugging Face causal-LM folder: the embedded tiny MoE model and its offline tokenizer, saving and
loading (the same path for a user's checkpoint). See docs/policy.md."""

from ring_async.policy.errors import PolicyError
from ring_async.policy.model import Policy, build_policy, count_parameters, load_policy, save_policy
from ring_async.policy.tokenizer import build_tokenizer, encode_prompt, format_prompt, stop_token_ids

__all__ = [
    "Policy", "PolicyError", "build_policy", "build_tokenizer", "count_parameters", "encode_prompt", "format_prompt",
    "load_policy", "save_policy", "stop_token_ids",
]
