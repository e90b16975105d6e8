"""Shared by the personalization tests: a TINY random SAN whose proposals follow the image.

SAN's default init gives flat mask proposals (every logit ~1e-7, from the 0.02-std decoder
MLPs), which no image can move; re-initializing the mask decoder's query/pixel MLPs at He
gain (x5 on the last pixel layer) makes proposals follow the image (logit std ~2.6).
"""

from __future__ import annotations

import torch

from povss_ros.personal.concept import Concept
from povss_ros.san.config import TINY
from povss_ros.san.model import SAN, build_san


def proposal_following_tiny_san(seed: int = 1) -> SAN:
    m = build_san(TINY)
    gen = torch.Generator().manual_seed(seed)
    dec = m.side_adapter_network.mask_decoder
    with torch.no_grad():
        for mlp in (dec.query_mlp, dec.pix_mlp):
            for layer in mlp.layers:
                fan_in = layer.weight[0].numel()
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen))
                layer.weight.mul_((2.0 / fan_in) ** 0.5)
        dec.pix_mlp.layers[-1].weight.mul_(5.0)
    return m


def random_concept(
    base_row: torch.Tensor, base_class: str, n: int = 16, seed: int = 0, **switches: bool
) -> Concept:
    """A concept with every tensor moved off its init, so identities are not trivial."""
    c = Concept("x", base_class, base_row, n, **switches)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (c.t_per, c.w_z, c.w_m.weight, c.w_m.bias, c.f_per):
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return c
