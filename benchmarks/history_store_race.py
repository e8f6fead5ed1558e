"""Processes opening one new SQLite results store at the same moment: how many trials had one refuse it; prints JSON.

    python benchmarks/history_store_race.py [--trials 40] [--processes 6]

Each trial starts ``--processes`` Python processes that open a fresh store (``edgeft.history.store.open_store``,
which brings it to the schema) at once; a trial fails when any of them exits non-zero, its last error line kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPEN = ("import sys; sys.path.insert(0, {root!r}); from edgeft.history.store import open_store; "
        "open_store(sys.argv[1]).close()")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--processes", type=int, default=6)
    a = ap.parse_args()
    code = OPEN.format(root=str(ROOT))
    failed, errors = 0, []
    with tempfile.TemporaryDirectory(prefix="edgeft-race-") as tmp:
        for trial in range(a.trials):
            store = Path(tmp) / f"h{trial}.sqlite"
            procs = [subprocess.Popen([sys.executable, "-c", code, str(store)], stderr=subprocess.PIPE)
                     for _ in range(a.processes)]
            bad = [p.stderr.read().decode().strip().splitlines()[-1] for p in procs if p.wait() != 0]
            if bad:
                failed += 1
                errors.append(bad[0][:240])
    print(json.dumps({"trials": a.trials, "processes": a.processes, "trials_with_a_refusal": failed,
                      "errors": errors[:3]}, indent=1))


if __name__ == "__main__":
    main()
