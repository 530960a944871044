"""A cycle estimate from a model of the core, never a board's latency: the block profile of a region (every
executed block's bytes and count, from qemu's dcac_blocks plugin) weighed by llvm-mca's steady-state cycles
per block for the core's scheduling model, plus the simulated cache misses times the core's published
latencies (compiler/device/cores.py).

    cycles = sum over blocks (count x cycles per execution)
           + L1 misses (data and instruction) x the core's cost of an L1 miss
           + L2 misses x its cost of an L2 miss

A miss costs its latency divided by the misses the core keeps in flight, and at least its line's transfer
time (cores.py). What the estimate ignores (docs/cycle-estimate.md): branch mispredictions, the front end
beyond llvm-mca's dispatch width, which accesses the prefetchers hide entirely, TLB misses, and contention
between threads (one thread is profiled).

Each distinct block is analysed once per (LLVM version, scheduling model) and kept in the cache folder keyed
by its bytes, so profiles that share code (every build shares the runtime) cost nothing the second time.
"""
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from compiler import atomic, paths
from compiler.device.cores import Core
from compiler.errors import DeviceError

LLVM_BIN = Path("/usr/lib/llvm-19/bin")
LLVM_PACKAGE = "llvm-19"
STEADY_ITERATIONS = 100       # llvm-mca runs each block N and 2N times; the difference is the steady state
MCA_BATCH = 400               # blocks per llvm-mca invocation


@dataclass
class BlockProfile:
    """Blocks by index (address, instruction sizes, bytes) and, per marker, the executions of each block
    since the previous marker."""
    blocks: dict = field(default_factory=dict)       # index -> (vaddr, [sizes], bytes)
    regions: list = field(default_factory=list)      # [(marker id, {index: executions})]

    def counts_at(self, marker: int) -> dict:
        """Executions in the region that ends at `marker` (its last occurrence)."""
        for mid, counts in reversed(self.regions):
            if mid == marker:
                return counts
        raise DeviceError(f"the block profile has no marker {marker}: the guest did not reach it")


def parse_profile(text: str) -> BlockProfile:
    profile = BlockProfile()
    counts = None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "marker" and len(parts) == 2:   # (the cache plugin's marker lines carry its counters)
            counts = {}
            profile.regions.append((int(parts[1]), counts))
        elif parts[0] == "block":
            profile.blocks[int(parts[1])] = (int(parts[2], 16), [int(s) for s in parts[3].split(".")],
                                             bytes.fromhex(parts[4]))
        elif parts[0] == "count" and counts is not None:
            counts[int(parts[1])] = int(parts[2])
    return profile


def ensure_llvm() -> None:
    if not (LLVM_BIN / "llvm-mca").is_file():
        from compiler.device import emulator

        emulator.install_packages([LLVM_PACKAGE], "the cycle estimate (llvm-mca)")


def llvm_version() -> str:
    out = subprocess.run([str(LLVM_BIN / "llvm-mca"), "--version"], capture_output=True, text=True).stdout
    found = re.search(r"LLVM version (\S+)", out)
    return found.group(1) if found else "unknown"


def _instructions(code: bytes, sizes: list) -> list:
    out, at = [], 0
    for size in sizes:
        out.append(code[at:at + size])
        at += size
    return out


# x86 prefixes llvm-mc prints on a line of their own before the instruction they belong to
PREFIX_LINES = {"lock", "rep", "repe", "repne", "data16", "data32", "addr32", "rex64", "notrack", "xacquire",
                "xrelease", "cs", "ds", "es", "fs", "gs", "ss"}


def disassemble(codes: list, triple: str) -> list:
    """Assembly text for each block (a list of (bytes, sizes)): one llvm-mc call for all, one instruction per
    input line, so every line decodes to one instruction or to a warning naming the line. (The text is
    matched by position, not by re-encoding: the assembler may pick a shorter encoding of the same
    instruction.) Instructions LLVM cannot decode are left out; returns [(lines, undecoded count)]."""
    expected = [_instructions(code, sizes) for code, sizes in codes]
    # "[...]": the bytes of exactly one instruction (a partial one, where qemu ended a block inside an
    # instruction, is reported invalid instead of swallowing the next)
    text = "\n".join("[" + " ".join(f"0x{b:02x}" for b in insn) + "]" for insns in expected for insn in insns) + "\n"
    result = subprocess.run([str(LLVM_BIN / "llvm-mc"), "--disassemble", f"-triple={triple}"],
                            input=text, capture_output=True, text=True)
    invalid = {int(m.group(1)) for m in re.finditer(r"<stdin>:(\d+):\d+: warning: invalid instruction", result.stderr)}
    comment = "//" if triple.startswith("aarch64") else "#"      # AArch64 immediates are written #1
    decoded = [" ".join(line.split(comment)[0].split()) for line in result.stdout.splitlines()
               if line.startswith("\t") and not line.startswith("\t.")]
    out, at, line_no = [], 0, 0
    for insns in expected:
        lines, undecoded = [], 0
        for insn in insns:
            line_no += 1
            if line_no in invalid:
                undecoded += 1
                continue
            if at >= len(decoded):
                raise DeviceError("llvm-mc decoded fewer instructions than the block profile holds: its instruction "
                                  "sizes do not match this LLVM's decoder")
            text = decoded[at]
            at += 1
            # "lock" printed on a line of its own, then "xaddl ...": one instruction of the profile
            if text in PREFIX_LINES and len(insn) > 1 and at < len(decoded):
                text = f"{text} {decoded[at]}"
                at += 1
            lines.append(text)
        out.append((lines, undecoded))
    if at != len(decoded):
        raise DeviceError(f"llvm-mc decoded {len(decoded) - at} more lines than the block profile's instructions: "
                          "its instruction sizes do not match this LLVM's decoder")
    return out


def _mca(regions: list, core: Core, iterations: int):
    """Total cycles of each region (a list of assembly line lists) run `iterations` times, or None where
    llvm-mca cannot analyse the whole batch."""
    source = "".join(f"# LLVM-MCA-BEGIN r{i}\n" + "\n".join(lines) + f"\n# LLVM-MCA-END r{i}\n"
                     for i, lines in enumerate(regions))
    result = subprocess.run([str(LLVM_BIN / "llvm-mca"), f"-mtriple={core.mca_triple}", f"-mcpu={core.mca_cpu}",
                             f"-iterations={iterations}", "-json", "-instruction-info=0", "-resource-pressure=0",
                             "-skip-unsupported-instructions=any"], input=source, capture_output=True, text=True)
    if result.returncode != 0:
        return None
    found = json.loads(result.stdout)["CodeRegions"]
    if len(found) != len(regions):
        return None
    return [region["SummaryView"]["TotalCycles"] for region in found]


def _steady_cycles(regions: list, core: Core) -> list:
    """Cycles per execution of each region in the steady state: (cycles for 2N - cycles for N) / N, which
    leaves out the pipeline's fill and drain. A batch llvm-mca rejects is split until the culprit stands
    alone; a block it cannot analyse at all gets None."""
    if not regions:
        return []
    once = _mca(regions, core, STEADY_ITERATIONS)
    twice = _mca(regions, core, 2 * STEADY_ITERATIONS) if once is not None else None
    if once is not None and twice is not None:
        return [(b - a) / STEADY_ITERATIONS for a, b in zip(once, twice)]
    if len(regions) == 1:
        return [None]
    half = len(regions) // 2
    return _steady_cycles(regions[:half], core) + _steady_cycles(regions[half:], core)


_STRING_STEP = re.compile(r"^rep\w* (?:movs|stos)([bwlq]) ")
STRING_BYTES_PER_CYCLE = 32     # one AVX2-wide (32-byte) store per cycle


def _string_step(lines: list):
    """qemu runs `rep movs`/`rep stos` an element per block execution (a block of that one instruction);
    llvm-mca charges a whole rep instruction ~100 cycles. A step is charged its bytes at one 32-byte store
    per cycle, as the cores' fast-string microcode moves whole vector widths (an assumption of this model,
    docs/cycle-estimate.md)."""
    found = _STRING_STEP.match(lines[0]) if len(lines) == 1 else None
    return {"b": 1, "w": 2, "l": 4, "q": 8}[found.group(1)] / STRING_BYTES_PER_CYCLE if found else None


class BlockCosts:
    """Cycles per execution of blocks, by their bytes, for one core; kept on disk between runs."""

    def __init__(self, core: Core):
        ensure_llvm()
        self.core = core
        # v2: entries keep their assembly
        self.path = paths.cache_dir() / "cycle-model" / f"v2-llvm{llvm_version()}-{core.mca_triple}-{core.mca_cpu}.json"
        self.known = json.loads(self.path.read_text()) if self.path.is_file() else {}

    @staticmethod
    def key(code: bytes) -> str:
        return hashlib.sha256(code).hexdigest()[:24]

    def costs(self, blocks: dict) -> dict:
        """{index: {"cycles": per execution or None, "insns": n, "undecoded": n, "asm": [lines]}} for the given blocks
        (index -> (vaddr, sizes, bytes)); analyses only those not seen before."""
        todo = {}
        for index, (_, sizes, code) in blocks.items():
            if self.key(code) not in self.known:
                todo.setdefault(self.key(code), (code, sizes))
        if todo:
            keys = list(todo)
            for start in range(0, len(keys), MCA_BATCH):
                batch = keys[start:start + MCA_BATCH]
                texts = disassemble([todo[k] for k in batch], self.core.mca_triple)
                cycles = _steady_cycles([lines for lines, _ in texts], self.core)
                cycles = [_string_step(lines) or c for (lines, _), c in zip(texts, cycles)]
                for k, (lines, undecoded), c in zip(batch, texts, cycles):
                    self.known[k] = {"cycles": c, "insns": len(todo[k][1]), "undecoded": undecoded, "asm": lines}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_json(self.path, self.known)
        return {index: self.known[self.key(code)] for index, (_, _, code) in blocks.items()}


def core_cycles(profile: BlockProfile, counts: dict, costs: BlockCosts) -> dict:
    """The pipeline's share: sum of count x cycles per execution over the region's blocks. A block llvm-mca
    cannot analyse is charged one cycle per instruction and counted in `unmodelled_insns`. The ten costliest
    blocks come with their assembly, to see where the cycles go."""
    per_block = costs.costs({i: profile.blocks[i] for i in counts})
    cycles = insns = unmodelled = 0.0
    top = []
    for index, n in counts.items():
        cost = per_block[index]
        insns += n * cost["insns"]
        if cost["cycles"] is None:
            unmodelled += n * cost["insns"]
            block_cycles = n * cost["insns"]
        else:
            block_cycles = n * cost["cycles"]
            unmodelled += n * cost["undecoded"]
        cycles += block_cycles
        top.append((block_cycles, index, n))
    top.sort(reverse=True)
    return {"core_cycles": cycles, "insns": insns, "unmodelled_insns": unmodelled, "blocks": len(counts),
            "top_blocks": [{"vaddr": hex(profile.blocks[i][0]), "executions": n, "cycles": c,
                            "insns_per_execution": len(profile.blocks[i][1]),
                            "cycles_per_execution": per_block[i]["cycles"], "asm": per_block[i]["asm"]}
                           for c, i, n in top[:10]]}


def memory_cycles(misses: dict, core: Core) -> float:
    """Cycles the simulated misses add to the pipeline's (which charges every load an L1 hit): each L1 miss
    (data or instruction) and each L2 miss at the core's cost per miss (compiler/device/cores.py)."""
    l1 = misses.get("dmiss", 0) + misses.get("imiss", 0)
    return l1 * core.l1_miss_cycles() + misses.get("l2miss", 0) * core.l2_miss_cycles()


def latency_cycles(misses: dict, core: Core) -> float:
    """The misses charged their whole latency, as if none overlapped: the bound the estimate is checked
    beside (bench/cycle_check.py)."""
    l1 = misses.get("dmiss", 0) + misses.get("imiss", 0)
    return (l1 * (core.l2_latency - core.l1_latency)
            + misses.get("l2miss", 0) * (core.next_latency - core.l2_latency))


def estimate(core_part: dict, misses, core: Core) -> dict:
    """The whole estimate for one region: the pipeline's cycles plus the misses' (when a cache run exists)."""
    memory = memory_cycles(misses, core) if misses else None
    out = dict(core_part)
    out["memory_cycles"] = memory
    out["serial_memory_cycles"] = latency_cycles(misses, core) if misses else None
    out["misses"] = {k: misses[k] for k in ("dmiss", "imiss", "l2miss", "dacc", "l2acc") if k in misses} if misses else None
    out["cycles"] = core_part["core_cycles"] + (memory or 0.0)
    out["model"] = {"core": core.name, "mca_cpu": core.mca_cpu, "mca_model": core.mca_model,
                    "llvm": llvm_version(), "l1_latency": core.l1_latency, "l2_latency": core.l2_latency,
                    "next_latency": core.next_latency, "next_level": core.next_level,
                    "l1_miss_cycles": core.l1_miss_cycles(), "l2_miss_cycles": core.l2_miss_cycles(),
                    "includes_memory": misses is not None}
    return out


def _merge(into: dict, counts: dict, scale: float = 1.0) -> dict:
    for index, n in counts.items():
        into[index] = into.get(index, 0) + n * scale
    return into


def measure(engine: str, model, mcpu: str, per_kernel: bool = False, cache: bool = True, n: int = 2,
            warmup: int = 1, timeout=None) -> dict:
    """The estimate per inference of one engine ('tvm' library or 'ort' .onnx) on the core `mcpu`, one thread:
    a block-profile run, and (cache=True) a cache-model run for the misses. per_kernel (TVM): also per VM
    call, each region spanning the call and the VM instrument's round trip."""
    from compiler.device import cores, instruction_count as ic

    core = cores.lookup(mcpu)
    counter = ic.ensure_counter(core.arch)
    guest_model = ic.stage_model(counter["rootfs"], model)
    args = ["--engine", engine, "--model", guest_model, "--warmup", warmup, "--n", n,
            *(["--per-kernel"] if per_kernel else [])]
    run = ic.run_guest(counter, args, "blocks", mcpu, timeout)
    profile = parse_profile(run["log"])
    costs = BlockCosts(core)
    misses = None
    cache_run = None
    if cache:
        cache_run = ic.count(engine, model, mcpu, "cache", per_kernel=per_kernel, n=n, warmup=warmup,
                             timeout=timeout)
        misses = cache_run["per_inference"]
    per_inference = _merge({}, profile.counts_at(ic.MARK_STOP), 1.0 / n)
    out = {"per_inference": estimate(core_cycles(profile, per_inference, costs), misses, core),
           "seconds": run["seconds"] + (cache_run["seconds"] if cache_run else 0), "engine": engine,
           "mcpu": mcpu, "n": n, "guest": run["guest"], "qemu_version": counter["qemu_version"],
           "counters": cache_run["per_inference"] if cache_run else None}
    if per_kernel:
        names, base = run["guest"]["kernels"], run["guest"]["kernel_base"]
        kernel_counts, calls = {}, {}
        for mid, counts in profile.regions:
            if mid >= base and (mid - base) % 2 == 1:
                name = names[(mid - base) // 2]
                _merge(kernel_counts.setdefault(name, {}), counts)
                calls[name] = calls.get(name, 0) + 1
        kernel_misses = {row["name"]: row for row in cache_run["kernels"]} if cache_run else {}
        rows = []
        for name, counts in kernel_counts.items():
            row = estimate(core_cycles(profile, counts, costs), kernel_misses.get(name), core)
            rows.append({"name": name, "calls": calls[name], "cycles": row["cycles"],
                         "core_cycles": row["core_cycles"], "memory_cycles": row["memory_cycles"],
                         "insns": row["insns"], **{k: v for k, v in (row["misses"] or {}).items()
                                                   if k in ("dmiss", "l2miss")}})
        out["kernels"] = sorted(rows, key=lambda r: -r["cycles"])
    return out


def profile_program(program, core: "Core", timeout=120) -> BlockProfile:
    """The block profile of a static program run directly by this machine's qemu-user (no chroot, no Python):
    for small known loops, as the tests use. The program delimits its region with the marker system call."""
    import tempfile

    from compiler.device import instruction_count as ic

    counter = ic.ensure_host_counter()
    qemu, write_nr = f"/usr/bin/qemu-{core.arch}", ic.WRITE_SYSCALL[core.arch]
    with tempfile.TemporaryDirectory(prefix="dcac-blocks-") as scratch:
        log = Path(scratch) / "blocks.log"
        result = subprocess.run([qemu, "-plugin", f"{counter['plugins']['dcac_blocks']},write_nr={write_nr}", "-d",
                                 "plugin", "-D", str(log), "-cpu", core.qemu_cpu, str(program)],
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise DeviceError(f"{program} exited with {result.returncode} under {qemu}: {result.stderr.strip()[:200]}")
        return parse_profile(log.read_text())
