"""Makes tests/support.py importable as `support` from every test file.

The tests run with --import-mode=importlib and have no __init__.py, so tests/ is not on
sys.path by itself. This conftest (loaded by pytest before any test module under it, from
any cwd and any clone folder name) puts its own folder first on sys.path.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
