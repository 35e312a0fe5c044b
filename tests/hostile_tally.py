"""A tally of hostile requests for issue 22's table: each test records what it sent and how it was answered.

With ``HOSTILE_TALLY=path`` set, the counts are appended to ``path`` (JSON lines) when the test process exits;
``python tests/hostile_tally.py path`` prints the table. Without it nothing is written.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from collections import defaultdict

_COUNTS: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))


def record(server: str, cls: str, status: int | None, *, traceback: bool = False, state_left: bool = False) -> None:
    c = _COUNTS[(server, cls)]
    c["cases"] += int(status is not None)
    c["refused"] += int(status is not None and 400 <= status < 500)
    c["5xx"] += int(status is not None and status >= 500)
    c["tracebacks"] += int(traceback)
    c["state_left"] += int(state_left)


def _dump() -> None:
    path = os.environ.get("HOSTILE_TALLY")
    if not path or not _COUNTS:
        return
    with open(path, "a") as f:
        for (server, cls), c in sorted(_COUNTS.items()):
            f.write(json.dumps({"server": server, "class": cls, **c}) + "\n")


atexit.register(_dump)


def table(path: str) -> str:
    rows: dict[str, dict] = {}
    with open(path) as f:
        lines = f.read().splitlines()
    for line in lines:
        r = json.loads(line)
        row = rows.setdefault(r["server"], {"classes": set(), "cases": 0, "refused": 0, "5xx": 0, "tracebacks": 0,
                                            "state_left": 0})
        if r["class"] != "server log":  # the per-test traceback check, not a class of input
            row["classes"].add(r["class"])
        for k in ("cases", "refused", "5xx", "tracebacks", "state_left"):
            row[k] += r.get(k, 0)
    out = ["| server | classes tried | cases (incl. fuzz) | refused cleanly (4xx) | 5xx | tracebacks | state left |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for server, row in sorted(rows.items()):
        out.append(f"| {server} | {len(row['classes'])}: {', '.join(sorted(row['classes']))} | {row['cases']} | "
                   f"{row['refused']} | {row['5xx']} | {row['tracebacks']} | {row['state_left']} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(table(sys.argv[1]))
