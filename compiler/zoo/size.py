"""How big a network is: trainable parameters and multiply-accumulates (MACs) of one forward pass."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params_and_macs(model: nn.Module, input_shape=(1, 3, 224, 224)) -> tuple[int, int]:
    """Trainable parameters, and the MACs of every convolution and matrix product for one forward.

    FlopCounterMode sees the aten ops, so the attention products of a transformer (Q K^T, A V) count
    alongside convs and linear layers, whatever module issues them; it reports 2 FLOPs per MAC. Element-wise
    ops, pooling and normalisation are not counted, as in the papers' MAC figures. The forward runs on a
    copy on the meta device: shapes only, no arithmetic, and the model itself is left as it was.
    """
    shadow = copy.deepcopy(model).to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        shadow(torch.zeros(input_shape, device="meta"))
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return params, counter.get_total_flops() // 2
