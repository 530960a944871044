"""The cycle estimate's parts on programs whose answer is known: the block profile counts a loop exactly, and
the estimate (llvm-mca's Cortex-A72 model) puts a scalar loop above its vectorised twin."""
import subprocess

import pytest

from compiler.device import cores, cycle_estimate

pytestmark = pytest.mark.emulated

A72 = cores.CORES["cortex-a72"]

MARKER = """
    .macro marker id
    movz x0, #0xd8ac
    movk x0, #0x3, lsl #16
    adr x1, buf
    mov x2, #\\id
    mov x8, #64
    svc #0
    .endm
    .global _start
_start:
"""
EXIT = """
    mov x0, #0
    mov x8, #93
    svc #0
    .data
    .balign 16
buf: .space 65536
"""


def program(tmp_path, name: str, body: str):
    """A static aarch64 program with no libc: marker 1, `body`, marker 2, exit."""
    source = tmp_path / f"{name}.S"
    source.write_text(MARKER + "    marker 1\n" + body + "    marker 2\n" + EXIT)
    binary = tmp_path / name
    subprocess.run(["aarch64-linux-gnu-gcc", "-nostdlib", "-static", str(source), "-o", str(binary)], check=True)
    return binary


def region(binary):
    profile = cycle_estimate.profile_program(binary, A72)
    counts = profile.counts_at(2)
    blocks = {index: cycle_estimate.disassemble([(profile.blocks[index][2], profile.blocks[index][1])],
                                                A72.mca_triple)[0][0] for index in counts}
    return profile, counts, blocks


def test_the_block_profile_counts_a_known_loop_exactly(tmp_path):
    binary = program(tmp_path, "loop", """
    mov x3, #1000
    mov x4, #0
loop:
    add x4, x4, #1
    subs x3, x3, #1
    b.ne loop
""")
    profile, counts, blocks = region(binary)
    body = ["add x4, x4, #1", "subs x3, x3, #1", "b.ne #-8"]
    mnemonics = sorted((counts[i], [insn.split()[0] for insn in blocks[i]]) for i in counts)
    # the first pass runs inside the block that enters the loop; the other 999 start at the label; then the
    # second marker's block
    assert mnemonics == sorted([(1, ["mov", "mov", "add", "subs", "b.ne"]), (999, ["add", "subs", "b.ne"]),
                                (1, ["mov", "movk", "adr", "mov", "mov", "svc"])]), blocks
    assert [blocks[i] for i in counts if counts[i] == 999] == [body]
    costs = cycle_estimate.BlockCosts(A72)
    part = cycle_estimate.core_cycles(profile, counts, costs)
    assert part["insns"] == 5 + 3 * 999 + 6
    assert part["unmodelled_insns"] == 0


SUM = """
    adr x1, buf
    mov x3, #{count}
    movi v1.4s, #0
sum:
    {load}
    {add}
    subs x3, x3, #1
    b.ne sum
"""


def test_the_estimate_puts_a_scalar_loop_above_its_vectorised_twin(tmp_path):
    """The same sum of 4096 floats, a lane at a time and four lanes at a time."""
    scalar = program(tmp_path, "scalar", SUM.format(count=4096, load="ldr s0, [x1], #4", add="fadd s1, s1, s0"))
    vector = program(tmp_path, "vector", SUM.format(count=1024, load="ldr q0, [x1], #16",
                                                     add="fadd v1.4s, v1.4s, v0.4s"))
    costs = cycle_estimate.BlockCosts(A72)
    estimate = {}
    for name, binary in [("scalar", scalar), ("vector", vector)]:
        profile, counts, _ = region(binary)
        estimate[name] = cycle_estimate.core_cycles(profile, counts, costs)
    assert estimate["scalar"]["core_cycles"] > 3 * estimate["vector"]["core_cycles"], estimate
    # per iteration: the scalar loop's dependent fadd chain sets its pace, as it does the vector loop's
    per_iteration = {name: estimate[name]["core_cycles"] / n for name, n in [("scalar", 4096), ("vector", 1024)]}
    assert per_iteration["scalar"] == pytest.approx(per_iteration["vector"], rel=0.2), per_iteration


def test_a_miss_costs_its_latency_over_the_misses_in_flight_and_at_least_its_transfer():
    """The Cortex-A72: six line fills in flight, 8 bytes a cycle from L2 (docs/cycle-estimate.md)."""
    assert A72.l1_miss_cycles() == pytest.approx(max((21 - 4) / 6, 64 / 8))
    assert A72.l2_miss_cycles() == pytest.approx((166 - 21) / 6)
    misses = {"dmiss": 1000, "imiss": 10, "l2miss": 100}
    assert cycle_estimate.memory_cycles(misses, A72) == pytest.approx(1010 * 8 + 100 * (166 - 21) / 6)
    assert cycle_estimate.latency_cycles(misses, A72) == pytest.approx(1010 * 17 + 100 * 145)
