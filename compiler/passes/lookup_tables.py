"""Quantized element-wise chains -> 256-entry lookup tables.

Between a QDQ model's quantize steps, its sigmoid gates and SiLU activations stay float: for each element,
dequantize -> sigmoid (an exp and a division) -> quantize -> dequantize -> multiply -> quantize. Every value
of that chain is a function of one 8-bit tensor, so it takes at most 256 values: this pass finds each
`quantize` whose float operand is computed element-wise from a single 8-bit tensor `x` (through its
dequantizes, scalar constants and intermediate quantize/dequantize pairs) and replaces the chain by

    y = table[int32(x) - min(x's type)]      table: the chain evaluated on all 256 values of x's type

(ONNX Runtime's QLinearSigmoid and XNNPACK's int8 sigmoid are such tables). The tables are computed by TVM's
own operators on the host, every chain applied to all 256 values in one build, so each entry is exactly what
the float chain gives for it. Only chains with a transcendental step are replaced: a requantization or a
clamp is a few vector instructions per element, cheaper than a table's per-element load.

Runs on the imported module after integer_kernels, before anything folds the scalar scales away.
"""
import numpy as np

from compiler.passes.integer_kernels import EIGHT_BIT, is_scalar, static_shape

# tvm.relax's OpPatternKind.kBroadcast: fuses as an element-wise step does (kElemWise, 0, would read as no
# pattern given, and TVM's analysis calls a table read opaque)
BROADCAST = 1
TABLE_ATTR = "lookup_table"  # marks the functions that read a table
# the element-wise steps a chain may hold: float in, float out, same shape (binary ones: a scalar constant or
# another value of the same chain as second operand)
UNARY = ("sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt", "erf", "negative", "abs", "square", "round", "floor",
         "ceil", "clip", "nn.relu", "nn.silu", "nn.gelu", "nn.gelu_tanh", "nn.softplus", "nn.leakyrelu")
BINARY = ("add", "subtract", "multiply", "divide", "maximum", "minimum", "power")
# the steps that make a table pay: each costs tens of instructions per element
TRANSCENDENTAL = ("sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt", "erf", "divide", "power", "nn.silu",
                  "nn.gelu", "nn.gelu_tanh", "nn.softplus")


def rewrite(mod):
    """(module, chains replaced by tables)."""
    from tvm import relax

    mutator = _make_mutator()(mod)
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mutator.find_chains(func)
    if not mutator.chains:
        return mod, 0
    chains = list(mutator.chains.values())
    computed = tables([chain for chain, _ in chains], [source for _, source in chains])
    mutator.tables = dict(zip(mutator.chains, computed))
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return relax.transform.DeadCodeElimination()(mutator.builder_.get()), len(mutator.chains)


def tables(chains, sources) -> list:
    """The values of each chain (an expression of its 8-bit source) for every value of the source's type, in
    ascending order of that value: all chains in one host build, computed by TVM's own operators."""
    import tvm
    from tvm import relax

    inputs, every_value = {}, {}  # (dtype, rank) -> parameter, its argument
    for source in sources:
        key = (str(source.ty.dtype), len(source.ty.shape))
        if key not in inputs:
            info = np.iinfo(key[0])
            every_value[key] = np.arange(info.min, info.max + 1).astype(key[0]).reshape((-1,) + (1,) * (key[1] - 1))
            inputs[key] = relax.Var(f"every_{key[0]}_{key[1]}", relax.TensorType(every_value[key].shape, key[0]))
    builder = relax.BlockBuilder()
    with builder.function("tables", list(inputs.values())):
        with builder.dataflow():
            outs = [_substitute(chain, source, inputs[(str(source.ty.dtype), len(source.ty.shape))], builder)
                    for chain, source in zip(chains, sources)]
            out = builder.emit_output(relax.Tuple(outs))
        builder.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm"})
    machine = tvm.runtime.vm.VirtualMachine(tvm.compile(builder.get(), target=target), tvm.cpu())
    results = machine["tables"](*[tvm.runtime.tensor(every_value[key]) for key in inputs])
    return [result.numpy().reshape(-1) for result in results]


def lookup(builder, x, table):
    """The call that reads `table` (a constant) at each 8-bit value of `x`, its function added to `builder`."""
    return builder.call_te(_lookup, x, table, primfunc_name_hint="lookup",
                           primfunc_attrs={"op_pattern": BROADCAST, TABLE_ATTR: 1})


def is_lookup(module, call) -> bool:
    """Whether `call` calls a function `lookup` made (in `module`): other passes move it with its operand."""
    from tvm import relax

    return (isinstance(call, relax.Call) and call.op.same_as(_call_tir()) and isinstance(call.args[0], relax.GlobalVar)
            and call.args[0] in module.get_global_vars() and module[call.args[0]].attrs is not None
            and TABLE_ATTR in module[call.args[0]].attrs)


def _call_tir():
    import tvm

    return tvm.ir.Op.get("relax.call_tir")


def _lookup(x, table):
    """y[i] = table[x[i] - min(x's type)]: element-wise in x (the table is a constant), so it fuses with the
    element-wise and injective steps around it, as the float chain did."""
    from tvm import te

    low = int(np.iinfo(str(x.dtype)).min)
    return te.compute(x.shape, lambda *i: table[x(*i).astype("int32") - low], name="lookup")


def _alive(func, replaced_inputs) -> set:
    """The vars of `func` its result still depends on once each var in `replaced_inputs` is computed from the
    inputs given there instead of its own value."""
    from tvm import relax

    inputs = {binding.var: replaced_inputs.get(binding.var) or relax.analysis.free_vars(binding.value)
              for block in func.body.blocks for binding in block.bindings}
    alive, pending = set(), list(relax.analysis.free_vars(func.body.body))
    while pending:
        var = pending.pop()
        if var not in alive:
            alive.add(var)
            pending.extend(inputs.get(var, ()))
    return alive


def _substitute(expr, source, replacement, builder):
    """`expr` with `source` replaced by `replacement`, its calls re-emitted so their shapes follow."""
    from tvm import relax

    if expr.same_as(source):
        return replacement
    if isinstance(expr, relax.Call):
        args = [_substitute(arg, source, replacement, builder) for arg in expr.args]
        return builder.emit(relax.Call(expr.op, args, expr.attrs, expr.ty_args))
    return expr  # a scalar constant


def _make_mutator():
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    quantize, dequantize = tvm.ir.Op.get("relax.quantize"), tvm.ir.Op.get("relax.dequantize")
    unary = {tvm.ir.Op.get(f"relax.{name}") for name in UNARY}
    binary = {tvm.ir.Op.get(f"relax.{name}") for name in BINARY}
    costly = {tvm.ir.Op.get(f"relax.{name}") for name in TRANSCENDENTAL}

    @mutator
    class LookupTables(PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.bound = {}  # var -> its value, as imported
            self.chains = {}  # var bound to a quantize that a table replaces -> (chain, source)
            self.tables = {}  # var -> the table that replaces its chain

        def find_chains(self, func):
            self.bound.update({binding.var: binding.value for block in func.body.blocks for binding in block.bindings})
            found = {}
            for block in func.body.blocks:
                for binding in block.bindings:
                    chain = self.chain(binding.value)
                    if chain is not None:
                        found[binding.var] = chain
            # a chain inside a longer one (the sigmoid's quantize within a SiLU's) dies with it: no table for it
            alive = _alive(func, {var: [source] for var, (_, source) in found.items()})
            self.chains.update({var: chain for var, chain in found.items() if var in alive})

        def visit_var_binding_(self, binding):
            value = self.visit_expr(binding.value)
            if binding.var in self.chains:
                source = self.visit_expr(self.chains[binding.var][1])
                value = lookup(self.builder_, source, relax.const(self.tables[binding.var]))
            emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
            self.set_var_remap(binding.var, emit(value, str(binding.var.name)))

        def chain(self, value):
            """(chain, source) when `value` is an 8-bit quantize of an element-wise chain of one 8-bit tensor
            with a transcendental step, else None: the chain is `value` with its vars replaced by their values."""
            sources, steps = set(), []
            inlined = self.quantize_step(value, sources, steps)
            if inlined is None or len(sources) != 1 or not any(op in costly for op in steps):
                return None
            (source,) = sources
            return (inlined, source) if static_shape(source) == static_shape(value) else None

        def quantize_step(self, value, sources, steps):
            """An 8-bit quantize with scalar parameters, its operand inlined; None for anything else."""
            if (not isinstance(value, relax.Call) or value.op != quantize
                    or not all(is_scalar(arg) for arg in value.args[1:])):
                return None
            operand = self.inline(value.args[0], sources, steps)
            return None if operand is None else relax.Call(quantize, [operand, *value.args[1:]], value.attrs,
                                                           value.ty_args)

        def inline(self, expr, sources, steps):
            """The float `expr` written in terms of its 8-bit sources (added to `sources`; the ops met added to
            `steps`), or None when something in it is not element-wise on them."""
            if is_scalar(expr):
                return expr
            call = self.bound.get(expr) if isinstance(expr, relax.Var) else expr
            if not isinstance(call, relax.Call) or str(call.ty.dtype) != "float32":
                return None
            if call.op == dequantize:
                data = call.args[0]
                if not all(is_scalar(arg) for arg in call.args[1:]) or str(data.ty.dtype) not in EIGHT_BIT:
                    return None
                inner_sources, inner_steps = set(), []
                inner = self.quantize_step(self.bound.get(data), inner_sources, inner_steps)
                if inner is None or len(inner_sources) != 1:  # the chain starts at this 8-bit tensor
                    sources.add(data)
                    inner = data
                else:  # a quantize -> dequantize inside the chain
                    sources.update(inner_sources)
                    steps.extend(inner_steps)
                return relax.Call(dequantize, [inner, *call.args[1:]], call.attrs, call.ty_args)
            if call.op not in unary and call.op not in binary:
                return None
            args = []
            for arg in call.args:
                inlined = self.inline(arg, sources, steps)
                if inlined is None or (not is_scalar(arg) and static_shape(arg) != static_shape(call)):
                    return None
                args.append(inlined)
            steps.append(call.op)
            return relax.Call(call.op, args, call.attrs, call.ty_args)

    return LookupTables
