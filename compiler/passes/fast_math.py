"""Vectorisable exp, sigmoid and erf for LLVM CPU targets, as TIR intrinsic lowerings (no workload change).

LLVM has no vector exp on x86 or AArch64: TVM lowers `exp` to `llvm.exp`, which LLVM splits into one
libm `expf` call per lane. Every SiLU and DC-AC gate of AttendNeXt is a sigmoid fused into a
convolution's epilogue, so those scalar calls run once per output element. Here `exp` and `sigmoid` on
float32 lower to a Cephes-style polynomial (range reduction by ln 2, degree-6 polynomial, exponent by
bit shift): a few fused multiply-adds per lane, vectorised with the rest of the loop, within 2 ulp
of expf over the clamped range [-88.38, 88.38].

`erf` has the same fate in TVM (one libm `erff` call per lane), and GELU, the activation of ConvNeXt's and
the vision transformers' MLPs, is x/2 (1 + erf(x/sqrt 2)) fused into their matmuls' epilogue: with libm it
costs more than the matmul. It lowers to Abramowitz & Stegun's formula 7.1.26 (absolute error at most 1.5e-7,
Handbook of Mathematical Functions, 1964), on the exp above, and near zero, where that formula's
1 - (...) cancels, to erf's Maclaurin series to the x^9 term.

These are lowerings (applied when a scheduled kernel is compiled), not graph rewrites: the kernels
MetaSchedule tunes and the records of a tuning database are unchanged. `install()` must run in every
process that compiles kernels: the build, and the tuning builder's workers.
"""
import math

LEVEL = 99  # above TVM's own llvm lowering of exp/sigmoid/erf (level 10)
CLAMP = 88.3762626647949  # ln(FLT_MAX): exp beyond it is inf or 0 in float32 anyway
# ln 2 split in two (Cody-Waite) so r = x - n*ln2 keeps its low bits.
LN2_HIGH, LN2_LOW = 0.693359375, -2.12194440e-4
POLYNOMIAL = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
# Abramowitz & Stegun 7.1.26: erf(x) = 1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-x^2), t = 1 / (1 + p x)
ERF_P = 0.3275911
ERF_A = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)  # a5 first (Horner order)
ERF_SERIES_BELOW = 0.5  # |x| below it: 2/sqrt(pi) (x - x^3/3 + x^5/10 - x^7/42 + x^9/216), error < 5e-7
ERF_SERIES = (1.0 / 216, -1.0 / 42, 1.0 / 10, -1.0 / 3, 1.0)  # x^8 coefficient first, in x^2
_installed = []


def _lanes(ty) -> int:
    text = str(ty)  # "float32" or "float32x16"
    return int(text.split("x", 1)[1]) if "x" in text else 1


def _constant(value, dtype: str, lanes: int):
    from tvm import tirx

    scalar = tirx.const(value, dtype)
    return tirx.Broadcast(scalar, lanes) if lanes > 1 else scalar


def fast_exp(x, ty):
    """exp(x) for a float32 (vector) expression `x` of type `ty`, as plain TIR arithmetic."""
    from tvm import tirx

    lanes = _lanes(ty)
    f = lambda value: _constant(value, "float32", lanes)  # noqa: E731
    clamped = tirx.max(tirx.min(x, f(CLAMP)), f(-CLAMP))
    n = tirx.floor(clamped * f(1.0 / math.log(2.0)) + f(0.5))
    r = clamped - n * f(LN2_HIGH) - n * f(LN2_LOW)
    poly = f(POLYNOMIAL[0])
    for coefficient in POLYNOMIAL[1:]:
        poly = poly * r + f(coefficient)
    mantissa = poly * r * r + r + f(1.0)
    int_type = "int32" if lanes == 1 else f"int32x{lanes}"
    exponent = tirx.Cast(int_type, n) + _constant(127, "int32", lanes)
    scale = tirx.reinterpret(str(ty), tirx.shift_left(exponent, _constant(23, "int32", lanes)))
    return mantissa * scale


def fast_erf(x, ty):
    """erf(x) for a float32 (vector) expression `x` of type `ty`, as plain TIR arithmetic."""
    from tvm import tirx

    lanes = _lanes(ty)
    f = lambda value: _constant(value, "float32", lanes)  # noqa: E731
    magnitude = tirx.abs(x)
    t = f(1.0) / (f(1.0) + f(ERF_P) * magnitude)
    poly = f(ERF_A[0])
    for coefficient in ERF_A[1:]:
        poly = poly * t + f(coefficient)
    far = f(1.0) - poly * t * fast_exp(-(magnitude * magnitude), ty)
    far = tirx.Select(x < f(0.0), -far, far)
    square = x * x
    series = f(ERF_SERIES[0])
    for coefficient in ERF_SERIES[1:]:
        series = series * square + f(coefficient)
    near = x * series * f(2.0 / math.sqrt(math.pi))
    return tirx.Select(magnitude < f(ERF_SERIES_BELOW), near, far)


def _is_float32(ty) -> bool:
    return str(ty).split("x", 1)[0] == "float32"


def _lower_exp(call):
    return fast_exp(call.args[0], call.ty) if _is_float32(call.ty) else call


def _lower_sigmoid(call):
    if not _is_float32(call.ty):
        return call
    one = _constant(1.0, "float32", _lanes(call.ty))
    return one / (one + fast_exp(-call.args[0], call.ty))


def _lower_erf(call):
    return fast_erf(call.args[0], call.ty) if _is_float32(call.ty) else call


def installed() -> bool:
    return bool(_installed)


def install() -> None:
    """Register the lowerings for target kind llvm (x86 and AArch64 alike); idempotent per process."""
    if _installed:
        return
    from tvm import tirx

    tirx.register_intrin_lowering("tirx.exp", "llvm", f=_lower_exp, level=LEVEL)
    tirx.register_intrin_lowering("tirx.sigmoid", "llvm", f=_lower_sigmoid, level=LEVEL)
    tirx.register_intrin_lowering("tirx.erf", "llvm", f=_lower_erf, level=LEVEL)
    _installed.append(True)
