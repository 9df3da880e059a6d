"""The benchmark suites' JSON output, rewritten after every measured row, so that a run cut short (a device call's
time limit, a crash in a later case) keeps what it measured: session 38 lost four M = 4096 rows that way. The file
says ``"complete": false`` until the run gets to its end. Also the two cell helpers every suite's printed lines use."""

from __future__ import annotations

import json
import os

from jax_deepgemm.testing.shapes import case_selected


class BenchJson:
    """``meta`` plus one list of rows per section (``sections``: their names, in order), written to ``path``."""

    def __init__(self, path: str, meta: dict, sections: tuple[str, ...]):
        self.path, self.meta = path, meta
        self.rows: dict[str, list] = {name: [] for name in sections}
        self._write(complete=False)

    def add(self, section: str, row: dict) -> dict:
        """Appends ``row`` to ``section``, rewrites the file and returns the row (for printing)."""
        self.rows[section].append(row)
        self._write(complete=False)
        return row

    def finish(self) -> None:
        self._write(complete=True)

    def _write(self, complete: bool) -> None:
        # Written beside the target and renamed over it: a run killed mid-write leaves the previous version whole.
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump({**self.meta, **self.rows, "complete": complete}, f, indent=1, default=str)
        os.replace(tmp, self.path)


def run_suites(out: BenchJson, suites, parts, filters, **bench_kw) -> None:
    """Runs a benchmark family's parts in order. ``suites``: (part, case keys, bench(key, **bench_kw) -> row, header,
    format(row) -> line) tuples; a part prints its header, then the line of each case that ``parts`` and ``filters``
    select as soon as it is measured, each row added to ``out`` under the part's name."""
    for part, keys, bench, header, fmt in suites:
        print(header, flush=True)
        for key in keys:
            if part in parts and case_selected(key, filters):
                print(fmt(out.add(part, bench(key, **bench_kw))), flush=True)


def ratio(num, den):
    """``num / den``, or None where either was not measured (None, an error string) or ``den`` is not positive."""
    numbers = isinstance(num, (int, float)) and isinstance(den, (int, float))
    return num / den if numbers and den > 0 else None


def fmt(x, spec: str) -> str:
    """A table cell: ``x`` formatted by ``spec``, or ``-`` where it was not measured."""
    return format(x, spec) if x is not None else "-"
