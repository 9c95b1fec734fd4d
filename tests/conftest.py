import sys
from pathlib import Path

# tests/ holds the notebook harness, imported by the notebook tests as `nbharness`
sys.path.insert(0, str(Path(__file__).resolve().parent))
