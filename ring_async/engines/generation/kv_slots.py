"""A KV cache of fixed batch rows ("slots") that sequences enter and leave while the batch keeps decoding.

transformers' ``DynamicCache`` grows by concatenation (a full copy of the cache per step) and has one length for
the whole batch. Here each layer owns a preallocated ``[rows, kv_heads, capacity, head_dim]`` buffer that a decode
step writes into in place; the model sees a view of the first ``length`` columns. All rows share the column axis and
are right-aligned: a sequence entering at column ``length`` puts its prompt in the columns just before it, and a
boolean mask of ``[rows, capacity]`` says which columns each row may attend to. A finished row is a hole (its past
masked out) until a waiting sequence takes it.

Room runs out in three ways, all handled by :meth:`SlotKVCache.relayout`, which copies the live columns into new
buffers: more rows are needed, a prompt is longer than the current length (needs columns in front), or the capacity
is reached. Relayout also drops leading columns no live row uses and, on request, compacts rows, so the cache holds
at most the longest live sequence plus slack. It is rare (capacity grows geometrically), so decoding copies nothing.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer


class SlotLayer(DynamicLayer):
    """One layer's keys and values for every slot, written in place."""

    def __init__(self) -> None:
        super().__init__()
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None
        self.length = 0

    def allocate(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        self.key_buffer, self.value_buffer = keys, values
        self.length = length
        self.device = keys.device
        self.is_initialized = True
        self._refresh_views()

    def _refresh_views(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if self.key_buffer is None or end > self.key_buffer.shape[-2]:
            raise RuntimeError("slot cache overflow: the engine must relayout before the step")  # a bug, not input
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self._refresh_views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


class SlotKVCache(DynamicCache):
    """The slot cache handed to the model's forward (a ``DynamicCache`` to every check transformers makes)."""

    def __init__(self, num_layers: int):
        Cache.__init__(self, layers=[SlotLayer() for _ in range(num_layers)])
        self.mask: torch.Tensor | None = None  # bool [rows, capacity]

    @property
    def slot_layers(self) -> list[SlotLayer]:
        return self.layers  # type: ignore[return-value]

    @property
    def rows(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    @property
    def length(self) -> int:
        return self.slot_layers[0].length

    @property
    def capacity(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]

    def relayout(
        self,
        *,
        keep_rows: Sequence[int],
        rows: int,
        live_from: int,
        front: int,
        back: int,
        template: DynamicCache | None = None,
    ) -> int:
        """Rebuild the buffers: old rows ``keep_rows`` become rows 0.., ``rows`` in all; columns ``[live_from,
        length)`` are kept; the new length is at least ``front`` and at least ``back`` columns stay free after it.

        ``template`` (a prefill cache) gives head counts, sizes and dtypes before the first allocation. Returns the
        column shift: a column ``c`` of the old layout is ``c + shift`` in the new one.
        """
        old_length = self.length if self.mask is not None else 0
        span = old_length - live_from
        new_length = max(span, front)
        # Geometric growth: the next relayout is at least as far away as the live span is long.
        capacity = new_length + max(back, span, 16)
        shift = new_length - old_length
        keep = list(keep_rows)
        for index, layer in enumerate(self.slot_layers):
            source = layer if layer.key_buffer is not None else template.layers[index]
            ref_k = source.key_buffer if isinstance(source, SlotLayer) else source.keys
            ref_v = source.value_buffer if isinstance(source, SlotLayer) else source.values
            shape_k = (rows, ref_k.shape[1], capacity, ref_k.shape[3])
            shape_v = (rows, ref_v.shape[1], capacity, ref_v.shape[3])
            keys = torch.zeros(shape_k, dtype=ref_k.dtype, device=ref_k.device)
            values = torch.zeros(shape_v, dtype=ref_v.dtype, device=ref_v.device)
            if keep and span > 0 and layer.key_buffer is not None:
                index_t = torch.tensor(keep, dtype=torch.long, device=ref_k.device)
                keys[: len(keep), :, new_length - span : new_length] = layer.key_buffer[index_t, :, live_from:old_length]
                values[: len(keep), :, new_length - span : new_length] = layer.value_buffer[
                    index_t, :, live_from:old_length
                ]
            layer.allocate(keys, values, new_length)
        device = self.slot_layers[0].key_buffer.device
        mask = torch.zeros((rows, capacity), dtype=torch.bool, device=device)
        if keep and span > 0 and self.mask is not None:
            index_t = torch.tensor(keep, dtype=torch.long, device=device)
            mask[: len(keep), new_length - span : new_length] = self.mask[index_t, live_from:old_length]
        self.mask = mask
        return shift

    def write_prompt(self, row: int, prefill: DynamicCache, prefill_row: int, prompt_len: int) -> int:
        """Copy a prefilled prompt (right-aligned in ``prefill``) into ``row`` just before the current length;
        returns the column its first token landed in."""
        length = self.length
        start = length - prompt_len
        for layer, source in zip(self.slot_layers, prefill.layers):
            layer.key_buffer[row, :, start:length] = source.keys[prefill_row, :, -prompt_len:]
            layer.value_buffer[row, :, start:length] = source.values[prefill_row, :, -prompt_len:]
        self.mask[row, :length] = False
        self.mask[row, start:length] = True
        return start

    def release(self, row: int) -> None:
        """The row's sequence finished: mask its past so the row is a hole until reused."""
        self.mask[row, : self.length] = False

    def advance_mask(self) -> torch.Tensor:
        """Open the column the next decode step writes (every row attends to its own new token, holes included, so
        no row is ever fully masked) and return the mask for that step."""
        length = self.length
        self.mask[:, length] = True
        return self.mask[:, : length + 1]
