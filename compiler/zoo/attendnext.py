"""AttendNeXt: a columnar self-attention backbone built from double-condensing attention condensers (DC-AC).

This is a reconstruction, not the authors' network: AttendNeXt (Wong et al., arXiv:2208.06980) was
published without code or weights. The layout follows the four-column network drawn in the same group's
Cancer-Net SCa x AttendNeXt (Tai et al., arXiv:2311.11656) and the attention-condenser formulas in
docs/attendnext.md; every reconstructed choice is a field of `AttendNeXtConfig`, so a user
who knows the paper's exact configuration can set it. Weights are seeded random unless a state_dict is given.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compiler.errors import UserError
from compiler.zoo.untrained import build_seeded, calibrate_batchnorms

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}
DOWNSAMPLES = ("blur", "avgpool")


@dataclass(frozen=True)
class AttendNeXtConfig:
    """Every reconstructed choice of the network; the defaults give 3.85M parameters, 0.59 GMACs at 224x224.

    3.85M sits just under the paper's bound (>1.37x smaller than MobileNetV3-L's 5.4M, so <= 3.94M).

    Spatial plan of the defaults (each DC-AC needs an even input size: it pools by 2 and upsamples by 2):
        224 -stem s2-> 112 (column stem) -down-> 56 (columns, 10/col) -down-> 28 (columns, 21/col, merge)
        -> 176 block 0 pools 28 -> 14, blocks 1..9 at 14 -> 372 block 0 at 14, block 1 pools 14 -> 7
        -> 1x1(744) at 7x7 -> global average pool -> FC.
    The last downsampling sits inside the last block, after its DC-AC, so no DC-AC ever sees the odd 7x7.
    """

    input_size: int = 224  # ImageNet resolution used by the paper's comparisons (MobileViT-XS, MobileNetV3-L)
    in_channels: int = 3  # RGB
    num_classes: int = 1000  # ImageNet-1k head
    activation: str = "silu"  # Cancer-Net SCa x AttendNeXt code uses SiLU; "relu" is the cheaper alternative
    downsample: str = "blur"  # anti-aliased downsampling (a paper design constraint): binomial blur or "avgpool" 2x2
    columns: int = 4  # four computational columns (paper); implemented as groups=4 convolutions (2311.11656 code)
    stem_channels: int = 32  # stem 3x3 conv(32), stride 2 (2311.11656 figure)
    column_stem_width: int = 8  # "four 3x3 conv(8) columns": per-column width of the column stem
    column_widths: tuple[int, ...] = (10, 21)  # per-column widths of the column stages: DC-AC(10), DC-AC(21)
    column_units: tuple[int, ...] = (2, 3)  # residual [3x3, 3x3, skip] units per column stage (2311.11656)
    column_downsample: tuple[bool, ...] = (True, True)  # each column stage starts by halving: 112 -> 56 -> 28
    merged_widths: tuple[int, ...] = (176, 372)  # channels after the columns merge (2311.11656 figure)
    merged_blocks: tuple[int, ...] = (10, 2)  # 10x block at 176, 2x at 372 (2311.11656 figure)
    merged_downsample: tuple[tuple[int, ...], ...] = ((0,), (1,))  # block indices per stage that halve: 28->14, 14->7
    merged_groups: tuple[int, ...] = (4, 12)  # groups of each stage's grouped 3x3: 176 = 4 x 44 as drawn; "the
    # same at 372" read as the same narrow group width (372 = 12 x 31; no multiple of 4 divides it nearer 44).
    # With 4 groups at 372 the 1000-class network has 4.26M parameters, over the paper's <= 3.9M bound
    head_channels: int = 744  # final 1x1(744) before global average pooling (2311.11656 figure)
    condenser_reduction: int = 8  # embedding channels = C / 8, rounded to a multiple of `columns` (the figure
    # gives no embedding width; AttendNets' condensers keep it narrow)

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise UserError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.downsample not in DOWNSAMPLES:
            raise UserError(f"downsample must be one of {list(DOWNSAMPLES)}, got {self.downsample!r}")
        column_lengths = {len(self.column_widths), len(self.column_units), len(self.column_downsample)}
        merged_lengths = {len(self.merged_widths), len(self.merged_blocks), len(self.merged_downsample),
                          len(self.merged_groups)}
        if len(column_lengths) != 1 or len(merged_lengths) != 1:
            raise UserError("column_widths/units/downsample and merged_widths/blocks/downsample/groups "
                            "need equal lengths")
        groups = [self.columns] + list(self.merged_groups)
        widths = [self.stem_channels] + list(self.merged_widths)
        if any(w % g or w % self.columns for w, g in zip(widths, groups)):
            raise UserError(f"stem_channels and merged_widths {widths} must divide by columns ({self.columns}) "
                            f"and by their merged_groups {self.merged_groups}")


def _conv_bn(in_ch, out_ch, kernel=1, stride=1, groups=1) -> list[nn.Module]:
    """Conv without bias followed by BatchNorm: the pair folds into one Conv at ONNX export."""
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(out_ch)]


def conv_bn_act(in_ch, out_ch, kernel, act, stride=1, groups=1) -> nn.Sequential:
    return nn.Sequential(*_conv_bn(in_ch, out_ch, kernel, stride, groups), ACTIVATIONS[act]())


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Expansion X: nearest x2, exported as one ONNX Resize with constant scales."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


class CondenserEmbedding(nn.Module):
    """E: a joint local (grouped 3x3) and cross-channel (1x1) embedding of the condensed features, at low res."""

    def __init__(self, channels, embed_channels, act, groups, pointwise_groups=1):
        super().__init__()
        self.local = conv_bn_act(channels, embed_channels, 3, act, groups=groups)
        self.cross = nn.Conv2d(embed_channels, channels, 1, groups=pointwise_groups)  # bias: pre-sigmoid logits

    def forward(self, q):
        return self.cross(self.local(q))


class AttentionCondenser(nn.Module):
    """Attention condenser: out = V * sigmoid(Upsample(E(MaxPool(V)))) * s + V (TinySpeech / AttendNets)."""

    def __init__(self, channels, embed_channels, act="silu", groups=4, pointwise_groups=1):
        super().__init__()
        self.condense = nn.MaxPool2d(2, 2)
        self.embed = CondenserEmbedding(channels, embed_channels, act, groups, pointwise_groups)
        self.scale = nn.Parameter(torch.ones(()))  # s: learned strength of the selective attention

    def forward(self, v):
        attention = torch.sigmoid(upsample2(self.embed(self.condense(v))))
        return v * attention * self.scale + v


class DCAC(nn.Module):
    """Double-condensing attention condenser: the feature branch is condensed as well as the attention branch.

    out = Upsample(F_low) * sigmoid(Upsample(A_low)) * s + V. C_a and C_f are both MaxPool2d(2, 2), which has
    no parameters, so one pooling feeds both embeddings; the exported ONNX reads
    MaxPool -> 2x [Conv(grouped) -> act -> Conv 1x1 -> Resize] -> Sigmoid (attention) -> Mul -> Mul(s) -> Add.
    """

    def __init__(self, channels, embed_channels, act="silu", groups=4, pointwise_groups=1):
        super().__init__()
        self.condense = nn.MaxPool2d(2, 2)
        self.attention = CondenserEmbedding(channels, embed_channels, act, groups, pointwise_groups)
        self.features = CondenserEmbedding(channels, embed_channels, act, groups, pointwise_groups)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, v):
        q = self.condense(v)
        features = upsample2(self.features(q))
        attention = torch.sigmoid(upsample2(self.attention(q)))
        return features * attention * self.scale + v


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: depthwise conv with a fixed binomial [1,2,1]x[1,2,1] / 16 kernel.

    The padding is the conv's own (not F.pad): the legacy exporter turns F.pad into a Pad with dynamic pads,
    which TVM's Relax ONNX importer rejects. The kernel is a buffer, so it is saved but never trained.
    """

    def __init__(self, channels):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16.0
        self.register_buffer("weight", kernel.expand(channels, 1, 3, 3).contiguous())

    def forward(self, x):
        return F.conv2d(x, self.weight, stride=2, padding=1, groups=x.shape[1])


def downsampler(kind: str, channels: int) -> nn.Module:
    return BlurPool(channels) if kind == "blur" else nn.AvgPool2d(2, 2)


class ColumnUnit(nn.Module):
    """Residual [3x3, 3x3, skip] unit inside the columns; groups=4 keeps the four columns disentangled."""

    def __init__(self, channels, act, groups):
        super().__init__()
        self.body = nn.Sequential(conv_bn_act(channels, channels, 3, act, groups=groups),
                                  *_conv_bn(channels, channels, 3, groups=groups))
        self.act = ACTIVATIONS[act]()

    def forward(self, x):
        return self.act(self.body(x) + x)


class MergedBlock(nn.Module):
    """DC-AC -> [anti-aliased downsample] -> 1x1 -> grouped 3x3 -> 1x1, plus a shortcut.

    The shortcut is identity when the shape is unchanged, else a point-wise strided conv (a paper design
    constraint) on the block input. The DC-AC runs before the downsampling, at the input resolution.
    """

    def __init__(self, in_ch, out_ch, cfg: AttendNeXtConfig, downsample: bool, groups: int):
        super().__init__()
        act = cfg.activation
        embed = _round_to(in_ch / cfg.condenser_reduction, cfg.columns)
        self.dcac = DCAC(in_ch, embed, act, cfg.columns)
        self.down = downsampler(cfg.downsample, in_ch) if downsample else nn.Identity()
        self.body = nn.Sequential(conv_bn_act(in_ch, out_ch, 1, act),
                                  conv_bn_act(out_ch, out_ch, 3, act, groups=groups),
                                  *_conv_bn(out_ch, out_ch, 1))
        needs_projection = downsample or in_ch != out_ch
        self.shortcut = nn.Sequential(*_conv_bn(in_ch, out_ch, 1, 2 if downsample else 1)) \
            if needs_projection else nn.Identity()
        self.act = ACTIVATIONS[act]()

    def forward(self, x):
        return self.act(self.body(self.down(self.dcac(x))) + self.shortcut(x))


class AttendNeXt(nn.Module):
    """Stem -> four columns (groups=4 convs + per-column DC-ACs) -> merge -> DC-AC blocks -> 1x1 -> pool -> FC."""

    def __init__(self, cfg: AttendNeXtConfig):
        super().__init__()
        self.config = cfg
        act, groups = cfg.activation, cfg.columns
        size = cfg.input_size // 2  # after the stride-2 stem
        width = groups * cfg.column_stem_width
        layers = [conv_bn_act(cfg.in_channels, cfg.stem_channels, 3, act, stride=2),
                  conv_bn_act(cfg.stem_channels, width, 3, act, groups=groups)]
        for per_column, units, down in zip(cfg.column_widths, cfg.column_units, cfg.column_downsample):
            if down:
                layers.append(downsampler(cfg.downsample, width))
                size //= 2
            new_width = groups * per_column
            embed = _round_to(new_width / cfg.condenser_reduction, groups)
            _require_even(size, f"column stage of width {per_column}")
            layers += [conv_bn_act(width, new_width, 3, act, groups=groups),
                       DCAC(new_width, embed, act, groups, pointwise_groups=groups),  # per column: no mixing
                       *[ColumnUnit(new_width, act, groups) for _ in range(units)]]
            width = new_width
        layers.append(conv_bn_act(width, cfg.merged_widths[0], 1, act))  # merge: the columns meet
        width = cfg.merged_widths[0]
        stages = zip(cfg.merged_widths, cfg.merged_blocks, cfg.merged_downsample, cfg.merged_groups)
        for out_ch, blocks, downs, block_groups in stages:
            for index in range(blocks):
                _require_even(size, f"block {index} of the {out_ch}-channel stage")
                layers.append(MergedBlock(width, out_ch, cfg, index in downs, block_groups))
                size //= 2 if index in downs else 1
                width = out_ch
        layers.append(conv_bn_act(width, cfg.head_channels, 1, act))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cfg.head_channels, cfg.num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _require_even(size: int, where: str) -> None:
    if size < 2 or size % 2:
        raise UserError(f"the DC-AC in the {where} sees a {size}x{size} map; it needs an even size >= 2: "
                        "change input_size or move a downsampling later")


def _seed_untrained_state(model: AttendNeXt, generator: torch.Generator) -> None:
    """Give every condenser scale s a seeded value, then calibrate the BatchNorms (compiler.zoo.untrained).

    Distinct scales keep each Mul(s) a real op in the ONNX graph (equal initialisers would be merged behind
    Identity nodes).
    """
    for condenser in (m for m in model.modules() if isinstance(m, (AttentionCondenser, DCAC))):
        condenser.scale.data = 0.5 + torch.rand((), generator=generator)
    cfg = model.config
    calibrate_batchnorms(model, generator, (cfg.in_channels, cfg.input_size, cfg.input_size))


def build_attendnext(config: AttendNeXtConfig | None = None, seed: int | None = 0, weights=None) -> nn.Module:
    """Build AttendNeXt in eval mode: seeded weights (same seed, same network; None: unseeded), or a state_dict.

    A weights file is read before anything is built, so a bad path fails at once.
    """
    config = config or AttendNeXtConfig()
    state = _read_state_dict(Path(weights)) if weights is not None else None
    model = build_seeded(lambda: AttendNeXt(config), seed, _seed_untrained_state if state is None else None)
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:200]
            raise UserError(f"weights file {weights} does not match this AttendNeXt config "
                            f"(use the config it was trained with): {detail}") from None
    return model.eval()


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"weights file not found: {path} (pass a .pt state_dict saved from the model, or omit it)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip or torch format errors: all mean "not a state_dict file"
        raise UserError(f"cannot read weights file {path}: {type(exc).__name__}; save it with "
                        "torch.save(model.state_dict(), path)") from None
    if not isinstance(state, dict):
        raise UserError(f"weights file {path} holds a {type(state).__name__}, not a state_dict; "
                        "save it with torch.save(model.state_dict(), path)")
    return state


def config_with(**changes) -> AttendNeXtConfig:
    """The default config with some fields changed (a frozen dataclass cannot be edited in place)."""
    return dataclasses.replace(AttendNeXtConfig(), **changes)
