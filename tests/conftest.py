"""Suite-wide setup.

- Every pass manager verifies the IR after every pass (TAPEIR_VERIFY_PASSES=1).
- tests/support.py is importable as `support`, and this checkout's tapeir is the one
  tested. The tests run with --import-mode=importlib and have no __init__.py, so tests/
  is not on sys.path by itself. This conftest (loaded by pytest before any test module
  under it, from any cwd and any clone folder name) puts its own folder first on sys.path,
  and the checkout's root before it, so that `import tapeir` finds this checkout's package
  even when pytest runs from another folder (where an installed tapeir, e.g. `pip install
  -e` of another checkout, would win).
"""
import os
import sys

os.environ["TAPEIR_VERIFY_PASSES"] = "1"

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
for _path in (_HERE, _ROOT) if os.path.isfile(os.path.join(_ROOT, "tapeir", "__init__.py")) else (_HERE,):
    if _path in sys.path:
        sys.path.remove(_path)
    sys.path.insert(0, _path)
