"""Shared by the benchmarks that measure one configuration per process (peak memory is per process)."""

from __future__ import annotations

import json
import subprocess
import sys


def run_in_child(script: str, spec: dict) -> bool:
    """Run ``script --child <spec as JSON>`` in a fresh Python, print its last JSON line (or an error
    line naming the exit status); return True when it succeeded."""
    proc = subprocess.run([sys.executable, script, "--child", json.dumps(spec)], capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(json.dumps({**spec, "error": f"exit {proc.returncode}: {err}"}), flush=True)
        return False
    print(lines[-1], flush=True)
    return True
