"""What custom fusion changes: kernels and intermediate-tensor bytes, per DC-AC block and in total.

For each fusion mode, phase 1 (`pipeline.tunable_module`) runs on the imported module, and main's calls to
PrimFuncs (`call_tir`) are walked in order. A *kernel* is one such call; *intermediate bytes* are the sizes of
the tensors those calls write, except main's final outputs (every such tensor goes to memory once and is
read back by a later kernel). Scratch buffers inside a kernel are not counted: untuned, FuseTIR keeps one
per fused op; a tuned schedule inlines elementwise ones.

A DC-AC block is the run of calls from a kernel that contains a max_pool2d (its condensation) up to and
including the next kernel that contains a resize2d (its epilogue); both fusion modes keep those names, so the
same region is compared.
"""
from __future__ import annotations

from compiler.passes import pipeline

DTYPE_BYTES = {"float32": 4, "float16": 2, "int64": 8, "int32": 4, "int8": 1, "uint8": 1, "bool": 1}


def _bytes(ty) -> int:
    from tvm import relax

    if isinstance(ty, relax.TupleType):
        return sum(_bytes(field) for field in ty.fields)
    size = DTYPE_BYTES.get(str(ty.dtype), 4)
    for dim in ty.shape:
        size *= int(dim)
    return size


def kernel_calls(mod) -> list[tuple[str, int, bool]]:
    """(PrimFunc name, bytes written, is a final output) for each call_tir in main, in program order."""
    from tvm import relax

    main = mod["main"]
    body = main.body
    result = body.body
    outputs = set()
    for expr in (result.fields if isinstance(result, relax.Tuple) else [result]):
        outputs.add(expr)
    aliases = {}  # var -> var it is bound to (R.output copies a dataflow var into a plain one)
    calls = []
    for block in body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Var):
                aliases[value] = binding.var
                continue
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
                calls.append((value.args[0].name_hint, binding.var))
    final = set(outputs)
    for var, alias in aliases.items():
        if alias in outputs:
            final.add(var)
    return [(name, _bytes(var.ty), var in final) for name, var in calls]


def dcac_blocks(calls) -> list[list[tuple[str, int, bool]]]:
    """The calls of each DC-AC block: from a max_pool2d kernel to the next resize2d kernel, inclusive."""
    blocks, current = [], None
    for call in calls:
        if "max_pool2d" in call[0]:
            current = []
        if current is not None:
            current.append(call)
            if "resize2d" in call[0]:
                blocks.append(current)
                current = None
    return blocks


def _summary(calls) -> tuple[int, int]:
    return len(calls), sum(size for _, size, final in calls if not final)


def explain(imported_mod, target, modes=("stock", "dcac")) -> str:
    """A table: per DC-AC block and in total, kernels and intermediate bytes under each fusion mode."""
    stats = {}
    for mode in modes:
        rejections = []
        calls = kernel_calls(pipeline.tunable_module(imported_mod, target, mode, rejections=rejections))
        stats[mode] = (calls, dcac_blocks(calls), rejections)
    n_blocks = max(len(blocks) for _, blocks, _ in stats.values())
    head = f"{'':>10}" + "".join(f"  {mode + ' kernels':>14} {mode + ' bytes':>14}" for mode in modes)
    lines = ["Fusion: kernels (PrimFunc calls from main) and bytes of intermediate tensors they write", head]
    for index in range(n_blocks):
        row = f"{'DC-AC ' + str(index):>10}"
        for mode in modes:
            blocks = stats[mode][1]
            kernels, size = _summary(blocks[index]) if index < len(blocks) else (0, 0)
            row += f"  {kernels:>14} {size:>14,}"
        lines.append(row)
    for label, pick in (("DC-AC sum", lambda s: [c for b in s[1] for c in b]), ("total", lambda s: s[0])):
        row = f"{label:>10}"
        for mode in modes:
            kernels, size = _summary(pick(stats[mode]))
            row += f"  {kernels:>14} {size:>14,}"
        lines.append(row)
    for mode in modes:
        if mode == "stock":
            continue
        calls = stats[mode][0]
        fused = sorted({name for name, _, _ in calls if name.startswith("fused_relax_")})
        lines.append(f"{mode}: {sum(1 for n, _, _ in calls if n.startswith('fused_relax_'))} calls of "
                     f"{len(fused)} pattern-fused kernels")
        reasons = {}
        for name, reason in stats[mode][2]:
            reasons[(name, reason)] = reasons.get((name, reason), 0) + 1
        for (name, reason), count in sorted(reasons.items()):
            lines.append(f"  rejected {count}x {name}: {reason}")
    return "\n".join(lines)


