"""Inputs for tuning measurements: float tensors uniform in [-1, 1), like real activations and weights.

MetaSchedule's runners fill every argument with `random_fill_for_measure`, whose float values lie in
[1, 10). Through a convolution those add up to outputs in the thousands, and a fused sigmoid epilogue
then runs exp() far outside its normal range: measured here, a tuned 1x1 conv + SiLU kernel of
AttendNeXt took 0.26 ms on such inputs and 0.12 ms on model-like ones. Tuning on the slow inputs ranks
schedules by the wrong cost. These allocators run on the runner's worker (pickled by reference, so this
package must be importable there: tuning.py puts it on PYTHONPATH).
"""


def _filler(uniform, fallback):
    def fill(tensor):
        if str(tensor.dtype).startswith(("float", "bfloat")):
            uniform(-1.0, 1.0, tensor)
        else:  # integer arguments (indices, shapes): MetaSchedule's own fill keeps them in range
            fallback(tensor)
    return fill


def alloc_local(device, args_info, alloc_repeat):
    """`f_alloc_argument` of a LocalRunner."""
    import tvm
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    fill = _filler(tvm.get_global_func("tvm.contrib.random.uniform"),
                   tvm.get_global_func("tvm.contrib.random.random_fill_for_measure"))
    return alloc_argument_common(fill, device, args_info, alloc_repeat)


def alloc_rpc(session, device, args_info, alloc_repeat):
    """`f_alloc_argument` of an RPCRunner: the tensors are filled on the device itself."""
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    fill = _filler(session.get_function("tvm.contrib.random.uniform"),
                   session.get_function("tvm.contrib.random.random_fill"))
    return alloc_argument_common(fill, device, args_info, alloc_repeat)
