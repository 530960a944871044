"""Keep the loops around a tensorized product scalar, in tuning as in the default schedules.

MetaSchedule's ParallelVectorizeUnroll rule annotates every design space's root block with a vectorize extent,
and the RewriteParallelVectorizeUnroll postprocessor then vectorises the innermost loops that fit it. Around
a product blockized for a tensor intrinsic (`vpdpbusd`, `sdot`: schedules/intrinsics.py) those loops hold
the intrinsic's whole body, which already is one vector instruction, and the build fails ("Cannot broadcast
lanes=16 to 32") for every candidate whose loops there fit the extent: the search lost many of its samples
of the packed products, the kernels where int8 spends its time. Dropping the root's vectorize annotation
before that postprocessor runs keeps the loops scalar; the drop is a schedule primitive, so it is in each
record's trace and replays when the database is applied.
`compiler/tuning/policy.py` gives every task this space; tuning with `--budget-policy off` takes
MetaSchedule's own contexts and keeps the fault.
"""
VECTORIZE = "meta_schedule.vectorize"
AUTO_TENSORIZE = "meta_schedule.auto_tensorize"


def tensorized(sch) -> bool:
    """Whether a block of the schedule is marked for a tensor intrinsic."""
    pending = [sch.get_sblock("root")]
    while pending:
        block = pending.pop()
        if AUTO_TENSORIZE in sch.get(block).annotations:
            return True
        pending.extend(sch.get_child_blocks(block))
    return False


def drop_root_vectorize(sch) -> None:
    """Remove the root block's vectorize annotation, if it has one."""
    root = sch.get_sblock("root")
    if VECTORIZE in sch.get(root).annotations:
        sch.unannotate(root, VECTORIZE)


def postproc():
    """A MetaSchedule postprocessor that drops the root's vectorize annotation of a tensorized schedule (to run
    before RewriteParallelVectorizeUnroll)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.postproc import PyPostproc

    @derived_object
    class ScalarLoopsAroundIntrinsics(PyPostproc):
        def _initialize_with_tune_context(self, context) -> None:
            pass

        def apply(self, sch) -> bool:
            if tensorized(sch):
                drop_root_vectorize(sch)
            return True

        def clone(self):
            return ScalarLoopsAroundIntrinsics()
    return ScalarLoopsAroundIntrinsics()


def space_generator(mod, target):
    """MetaSchedule's post-order-apply space for `target` (its own rules, postprocessors and mutators, cloned
    from a context that resolved them), with `postproc()` ahead of the postprocessors."""
    from tvm.s_tir import meta_schedule as ms

    stock = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply", task_name="stock").space_generator
    return ms.space_generator.PostOrderApply(
        sch_rules=[rule.clone() for rule in stock.sch_rules],
        postprocs=[postproc(), *(p.clone() for p in stock.postprocs)],
        mutator_probs={mutator.clone(): prob for mutator, prob in stock.mutator_probs.items()})
