"""Small random-initialised Hugging Face causal LMs and a byte-level tokenizer for the generation tests.

They go through exactly the code path a real checkpoint does (transformers' model classes and forward), only tiny:
a Qwen3-MoE (the embedded policy's architecture) and a dense Llama, with a vocabulary of a few hundred entries.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen3MoeConfig, Qwen3MoeForCausalLM

SPECIALS = ("<pad>", "<eos>")


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer without merges: 2 special tokens + 256 byte tokens; any string round-trips."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for char in sorted(alphabet):
        vocab[char] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>")


VOCAB = 320  # 258 tokens, padded like a real embedding matrix


def tiny_moe(seed: int = 0, vocab: int = VOCAB, hidden: int = 64, max_len: int = 256) -> Qwen3MoeForCausalLM:
    torch.manual_seed(seed)
    config = Qwen3MoeConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=hidden // 4, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64, intermediate_size=64,
        max_position_embeddings=max_len, eos_token_id=1, pad_token_id=0, bos_token_id=None, tie_word_embeddings=True,
    )
    return Qwen3MoeForCausalLM(config).eval()


def tiny_dense(seed: int = 0, vocab: int = VOCAB, hidden: int = 64, max_len: int = 256) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=max_len, eos_token_id=1, pad_token_id=0, bos_token_id=None,
    )
    return LlamaForCausalLM(config).eval()


def teacher_forced_logprobs(model, prompt: list[int], response: list[int], temperature: float = 1.0) -> torch.Tensor:
    """log p(response_t | prompt, response_<t) from one full forward pass (no cache, no padding)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt + response], device=device)
    with torch.no_grad():
        logits = model(ids).logits[0].float() / temperature
    logprobs = torch.log_softmax(logits, dim=-1).cpu()
    start = len(prompt)
    return logprobs[start - 1 : -1].gather(-1, torch.tensor(response).unsqueeze(-1)).squeeze(-1)


def one_torch_thread():
    """Generator for a fixture: tiny models run fastest on one intra-op thread, and on a shared 2-core box OpenMP
    threads spinning against other processes make them ~30x slower. Restores the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
