"""What a reader is told matches what was measured: every ratio ("0.79x") or time ("13.70 ms") the README and docs/
quote stands in a paragraph (or table row) that cites a results file under bench/results/, and the figure is in
that file (its Markdown or its JSON, to the figure's precision); each cited file records its command and machine.

Fenced code blocks are commands, not claims, and are left out; so are figures inside inline code.
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RESULTS = ROOT / "bench" / "results"

FIGURE = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)(x\b(?!\s*\[)| ms\b)")  # "3x[...]" repeats a block: no figure
CITED = re.compile(r"bench/results/([\w.\-]+?)(?:\.\{json,md\}|\.\{md,json\}|\.md|\.json|\.png)?(?=[)\s`,;:]|$)")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def _prose(text: str) -> str:
    """Inline code dropped (commands and names are not claims), unless it names a results file."""
    return re.sub(r"`[^`]*`", lambda m: m.group(0) if "bench/results/" in m.group(0) else " ", text)


def units(text: str) -> list:
    """(first line number, text) of each paragraph or table row outside fenced code, inline code removed. A table
    row carries its caption's citations (the paragraph just above the table)."""
    out, block, start, fenced, caption = [], [], 0, False, ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.startswith("|"):
            if block:
                out.append((start, _prose(" ".join(block))))
                caption = _prose(" ".join(block))
                block = []
            cites = " ".join(f"bench/results/{stem}" for stem in cited_files(caption))
            out.append((number, f"{_prose(line)} {cites}"))
        elif line.strip():
            start = start if block else number
            block.append(line)
        elif block:
            out.append((start, _prose(" ".join(block))))
            caption = _prose(" ".join(block))
            block = []
    if block:
        out.append((start, _prose(" ".join(block))))
    return out


def figures(text: str) -> list:
    return [(value.replace(",", ""), unit.strip()) for value, unit in FIGURE.findall(text)]


def cited_files(text: str) -> list:
    """The results files a unit cites, as stems (a stem stands for its .md and .json)."""
    return sorted({Path(name).stem if name.endswith((".md", ".json", ".png")) else name for name in CITED.findall(text)})


def file_numbers(stem: str) -> set:
    numbers = set()
    for suffix in (".md", ".json"):
        path = RESULTS / (stem + suffix)
        if path.is_file():
            numbers |= {float(n) for n in NUMBER.findall(path.read_text().replace(",", ""))}
    return numbers


def matches(value: str, numbers: set) -> bool:
    """The quoted figure is one of the file's numbers at the figure's precision (a ratio stored with more digits,
    or a time in seconds quoted in milliseconds, matches)."""
    decimals = len(value.split(".")[1]) if "." in value else 0
    target = float(value)
    tolerance = 0.5 * 10 ** -decimals + 1e-9
    return any(abs(n - target) <= tolerance or abs(1e3 * n - target) <= tolerance for n in numbers)


def _results_json(stem: str) -> dict:
    path = RESULTS / f"{stem}.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    return data if isinstance(data, dict) else {}


def recorded_commit(stem: str) -> str:
    """The commit a results file records (at its top level or in its machine), '' when none."""
    data = _results_json(stem)
    machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    return str(data.get("commit") or machine.get("commit") or "")


def records_provenance(stem: str) -> list:
    """What the cited file's JSON lacks of command, machine and commit ([] when it has all, or has no JSON)."""
    if not (RESULTS / f"{stem}.json").is_file():
        return []
    data = _results_json(stem)
    lacking = [] if "command" in data else ["command"]
    lacking += [] if "machine" in data or "device" in data else ["machine"]  # older files: "device"
    return lacking + ([] if recorded_commit(stem) else ["commit"])


# "commit 1a2b3c4" in prose, or a table cell holding only a commit (a "commit" column)
COMMIT = re.compile(r"(?:\bcommits? |\| )(?=[0-9a-f]*\d)([0-9a-f]{7,40})(?:\+changes)?(?= \||\b)")


def unrecorded_commits(text: str, stems: list) -> list:
    """Commits a unit names that none of its cited files records (a figure names the commit its file records)."""
    recorded = [recorded_commit(stem).split("+")[0] for stem in stems]
    return [sha for sha in COMMIT.findall(text)
            if not any(r and (r.startswith(sha) or sha.startswith(r)) for r in recorded)]


def check(path: Path) -> list:
    problems = []
    for line, text in units(path.read_text()):
        quoted, stems = figures(text), cited_files(text)
        where = f"{path.relative_to(ROOT)}:{line}"
        if not quoted and not stems:
            continue
        if not stems:
            problems.append(f"{where}: quotes {', '.join(v + u for v, u in quoted)} and cites no bench/results/ file")
            continue
        missing = [stem for stem in stems if not any((RESULTS / (stem + s)).is_file() for s in (".md", ".json"))]
        if missing:
            problems.append(f"{where}: cites {', '.join(missing)}, which bench/results/ does not hold")
            continue
        numbers = set().union(*(file_numbers(stem) for stem in stems))
        for value, unit in quoted:
            if not matches(value, numbers):
                problems.append(f"{where}: {value}{unit} is in none of {', '.join(stems)}")
        for stem in stems:
            lacking = records_provenance(stem)
            if lacking:
                problems.append(f"{where}: {stem}.json does not record its {' and '.join(lacking)}")
        for sha in unrecorded_commits(text, stems):
            problems.append(f"{where}: names commit {sha}, which none of {', '.join(stems)} records")
    return problems


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_quoted_figure_is_in_the_results_file_it_cites(path):
    problems = check(path)
    assert not problems, "\n".join(problems)


def test_the_check_can_fail(tmp_path):
    """A figure with no citation, one its cited file does not hold, and a citation of a file that does not exist
    are each reported; a matching one is not."""
    page = tmp_path / "page.md"
    page.write_text("TVM runs at 0.77x ONNX Runtime (bench/results/host-znver4.md).\n\n"
                    "It is 9.99x faster (bench/results/host-znver4.md).\n\n"
                    "Unsourced: 2.5x.\n\nMissing file: 1.0x (bench/results/no-such-file.md).\n\n"
                    "```\nin code: 3.0x\n```\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        problems = check(page)
    finally:
        ROOT = saved
    assert len(problems) == 3
    assert "9.99x is in none of host-znver4" in problems[0]
    assert "2.5x and cites no bench/results/ file" in problems[1]
    assert "no-such-file" in problems[2]


def module_map_rows() -> list:
    """The rows of docs/design.md's module map table."""
    text = (ROOT / "docs" / "design.md").read_text().split("## Module map", 1)[1]
    return [line for line in text.splitlines() if line.startswith("| `")]


def unmapped_modules(rows: list) -> list:
    """Modules of compiler/ and schedules/ that no row names: by their path, or by their file name in a row that
    names their folder (`compiler/device/cycle_estimate.py`, `cores.py`). Package markers are left out."""
    modules = sorted(p for folder in ("compiler", "schedules") for p in (ROOT / folder).rglob("*.py")
                     if p.name != "__init__.py" and "__pycache__" not in p.parts)
    lacking = []
    for module in modules:
        path = module.relative_to(ROOT).as_posix()
        folder = path.rsplit("/", 1)[0] + "/"
        if not any(f"`{path}`" in row or (folder in row and f"`{module.name}`" in row) for row in rows):
            lacking.append(path)
    return lacking


def test_the_module_map_lists_every_module():
    lacking = unmapped_modules(module_map_rows())
    assert not lacking, f"docs/design.md's module map lacks {', '.join(lacking)}"


def test_the_module_map_check_can_fail():
    rows = module_map_rows()
    without_guard = [row for row in rows if "compiler/tuning/guard.py" not in row]
    assert unmapped_modules(without_guard) == ["compiler/tuning/guard.py"]
