"""A seeded, untrained network that still behaves like a trained one: deterministic weights, and BatchNorm
statistics measured on seeded image-like inputs so that the signal neither fades nor explodes with depth.

No weights can be downloaded here, and latency does not depend on trained values; but numerics do
(a verification on a network whose every image gives the same logits proves little), hence the calibration.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn


def calibration_images(image_shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """Three seeded random fields (C, H, W) with structure at coarse, medium and pixel scale, of unit variance.

    White noise alone would be a poor stand-in for images: blur kernels and strided convs filter most of it
    out, so statistics measured on it would amplify smooth, image-like inputs a hundredfold.
    """
    channels, height, width = image_shape
    fields = []
    for factor in (32, 4, 1):
        low = (max(1, height // factor), max(1, width // factor))
        field = torch.randn(1, channels, *low, generator=generator)
        field = F.interpolate(field, size=(height, width), mode="bilinear", align_corners=False)
        fields.append(field / field.std())
    return torch.cat(fields)


def calibrate_batchnorms(model: nn.Module, generator: torch.Generator, image_shape: tuple[int, int, int]) -> None:
    """Give every BatchNorm seeded affine parameters and running statistics measured on calibration images.

    Untrained convs shrink (or grow) their input, so BatchNorms with textbook statistics (mean 0, var 1)
    would let the signal fade through tens of layers and every image would get the same logits. Statistics
    measured layer by layer (one train-mode pass, cumulative average) keep each layer near unit scale;
    random scales and shifts make the folded convs differ from the raw ones, as trained ones would.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in norms:
        bn.weight.data = 0.5 + torch.rand(bn.num_features, generator=generator)
        bn.bias.data = 0.2 * torch.randn(bn.num_features, generator=generator)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: after one pass, the running stats are that batch's stats
    model.train()
    with torch.no_grad():
        model(calibration_images(image_shape, generator))
    for bn in norms:
        bn.momentum = 0.1
    model.eval()


def init_like_trained(model: nn.Module) -> None:
    """The initialisation the baselines' papers train from (He, fan-out, for convs; N(0, 0.02) for linear
    layers), with what training would add: small non-zero biases and LayerNorm affine parameters away from
    1 and 0. No two initialisers are equal, so the ONNX export has none merged behind Identity nodes.
    Draws from the global RNG, which `build_seeded` has seeded.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.uniform_(module.weight, 0.5, 1.5)
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.LayerNorm)) and module.bias is not None:
            nn.init.normal_(module.bias, std=0.02)


def build_seeded(make: Callable[[], nn.Module], seed: Optional[int],
                 seed_state: Optional[Callable[[nn.Module, torch.Generator], None]]) -> nn.Module:
    """make() under torch.manual_seed(seed), then seed_state(model, generator) (unless None), in eval mode.

    Same seed, same network; the global RNG is left untouched (fork_rng), so building a model does not
    perturb the caller's randomness. seed=None builds the architecture alone (PyTorch's default init, no
    calibration): enough to count parameters and MACs, in a fraction of the time.
    """
    if seed is None:
        return make().eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
        if seed_state is not None:
            seed_state(model, torch.Generator().manual_seed(seed))
    return model.eval()


def build_baseline(make: Callable[[], nn.Module], seed: Optional[int], input_size: int) -> nn.Module:
    """A baseline of the zoo: paper-style initialisation, then BatchNorms calibrated on RGB images."""
    def seed_state(model, generator):
        init_like_trained(model)
        calibrate_batchnorms(model, generator, (3, input_size, input_size))

    return build_seeded(make, seed, seed_state)
