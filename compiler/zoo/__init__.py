"""The models `compile.py --model NAME` builds: AttendNeXt and the four baselines of its paper.

The registry is data: each builder is named "module:function" and imported only when a model is built,
so that asking whether a name is registered costs no torch import (and compiler.zoo.attendnext, which this
package's helpers serve, can import them without a cycle). A builder takes `seed` and returns the
network in eval mode, with deterministic random weights; seed=None gives the bare architecture, which is
all that counting parameters and MACs needs.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from compiler.errors import UserError


@dataclass(frozen=True)
class ZooModel:
    builder: str  # "module:function", called as function(seed=...)
    paper: str  # title, first author, arXiv id
    input_size: int  # square RGB input of the paper's ImageNet figures

    @property
    def build(self) -> Callable:
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.input_size, self.input_size)


MODELS = {
    "attendnext": ZooModel("compiler.zoo.attendnext:build_attendnext",
                           "Faster Attention Is What You Need: A Fast Self-Attention Neural Network Backbone "
                           "Architecture for the Edge via Double-Condensing Attention Condensers "
                           "(Wong et al., arXiv:2208.06980)", 224),
    "mobilenetv3_large": ZooModel("compiler.zoo.mobilenetv3:build",
                                  "Searching for MobileNetV3 (Howard et al., arXiv:1905.02244)", 224),
    "mobileone_s1": ZooModel("compiler.zoo.mobileone:build",
                             "MobileOne: An Improved One millisecond Mobile Backbone (Vasu et al., arXiv:2206.04861)",
                             224),
    "fbnet_c": ZooModel("compiler.zoo.fbnet:build",
                        "FBNet: Hardware-Aware Efficient ConvNet Design via Differentiable Neural Architecture "
                        "Search (Wu et al., arXiv:1812.03443)", 224),
    "mobilevit_xs": ZooModel("compiler.zoo.mobilevit:build",
                             "MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision Transformer "
                             "(Mehta and Rastegari, arXiv:2110.02178)", 256),
}


def lookup(name: str) -> ZooModel:
    if name not in MODELS:
        raise UserError(f"unknown model '{name}': give one of {', '.join(MODELS)} (see --list-models) "
                        "or the path of an ONNX file")
    return MODELS[name]


def describe_all() -> str:
    """`compile.py --list-models`: one line per model with its parameters, MACs, input and paper."""
    # Waits until needed: counting builds the models in PyTorch; asking whether a name is registered must not.
    from compiler.zoo.size import count_params_and_macs

    lines = []
    for name, entry in MODELS.items():
        params, macs = count_params_and_macs(entry.build(seed=None), entry.input_shape)
        lines.append(f"{name:<18} {params / 1e6:5.2f}M params  {macs / 1e9:5.2f} GMACs  "
                     f"{entry.input_size}x{entry.input_size}  {entry.paper}")
    return "\n".join(lines)
