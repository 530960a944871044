"""Reading a tuning database's files as a user may have left them: damage is one line naming the file.

A crash cuts at most the last line of a record file (tuning_db.repair drops it); anything else -- a
provenance.json edited by hand, a record that names a workload the workload file lacks -- is damage
that TVM reports as a C++ traceback. Here it becomes a UserError that names the folder and the fix.
"""
import json
from pathlib import Path

from compiler.errors import UserError


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON ({err}): restore it from the copy it came with, or tune "
                        "into a new --database folder") from None


def json_database(workload_file: Path, record_file: Path):
    """MetaSchedule's JSONDatabase over the two files, or a UserError if they do not load."""
    from tvm.s_tir import meta_schedule as ms

    try:
        return ms.database.JSONDatabase(path_workload=str(workload_file), path_tuning_record=str(record_file),
                                        allow_missing=True)
    except (RuntimeError, ValueError, TypeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[-1].replace("parallel_for_dynamic error with ", "") if lines else type(err).__name__
        if "workload_index" in detail:
            detail = f"a record names a workload that {Path(workload_file).name} does not have"
        raise UserError(f"the tuning database in {Path(record_file).parent} is damaged ({detail.rstrip(': ')}): "
                        "restore its files from the copy they came with, or tune into a new --database folder") \
            from None
