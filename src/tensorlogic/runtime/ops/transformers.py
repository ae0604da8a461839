"""MIL transformers family: scaled_dot_product_attention (iOS18)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import op


@op("scaled_dot_product_attention", since="iOS18")
def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
        attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(Q K^T / sqrt(E) + mask) V; a bool mask marks the keys that take part."""
    dtype = query.dtype
    if query.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        # CPU attention kernels are slow and less exact in half precision.
        query, key, value = query.float(), key.float(), value.float()
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        attn_mask = attn_mask.to(query.dtype)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask).to(dtype)
