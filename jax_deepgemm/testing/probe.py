"""The output of the quick kernel A/B probes (``scripts/*_probe.py``, run once per variant by
``scripts/ab_fp8_kernel.sh``): one line per problem, tagged with the variant, printed as it is measured and
appended to a file shared by all variants."""

from __future__ import annotations

import argparse


class ProbeLog:
    def __init__(self, tag: str, out: str | None):
        self.tag, self.out = tag, out

    def add(self, name: str, us: float, rate: str) -> None:
        line = f"{self.tag:12s} {name:52s} {us:8.1f} us {rate}"
        print(line, flush=True)
        if self.out:  # appended at once: a probe cut short by the call's time limit keeps its lines
            with open(self.out, "a") as f:
                f.write(line + "\n")


def probe_parser(doc: str) -> argparse.ArgumentParser:
    """The probes' shared arguments: the variant's tag and the file to append to."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("tag")
    parser.add_argument("--out")
    return parser
