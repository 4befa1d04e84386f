"""How long ``import comfyfn`` takes, and what the HTTP client adds on first use.

Run: ``.venv/bin/python -m bench.import_time [--runs 15]``. Each figure is the median of
fresh interpreters (``python -X importtime``: every top-level import, the interpreter's own
start-up imports included, shown alone in the first line), measured in one run side by side;
the goal for ``import comfyfn`` is under 150 ms warm.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CASES = {
    "bare interpreter (start-up imports)": "pass",
    "import comfyfn": "import comfyfn",
    "import comfyfn + comfyfn.Client": "import comfyfn; comfyfn.Client",
    "import httpx (for scale)": "import httpx",
}


def import_ms(code: str) -> float:
    """Milliseconds of all imports ``code`` does in a fresh interpreter (cumulative)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    total = 0
    for line in out.stderr.splitlines():
        parts = line.split("|")
        top_level = parts[-1].startswith(" ") and not parts[-1].startswith("  ")
        if len(parts) == 3 and top_level and parts[1].strip().isdigit():
            total += int(parts[1])  # top-level imports only: their times include the rest
    return total / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    import_ms("import comfyfn")  # warm the file cache and the bytecode
    print(f"{'':34}{'median ms':>10}{'min ms':>8}   (of {args.runs} fresh interpreters)")
    for name, code in CASES.items():
        times = [import_ms(code) for _ in range(args.runs)]
        print(f"{name:34}{statistics.median(times):10.1f}{min(times):8.1f}")


if __name__ == "__main__":
    main()
