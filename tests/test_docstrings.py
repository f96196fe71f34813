"""Docstring examples run, and every public function and Tensor member has one (STYLE.md).

Each module of the tapeir package is one test: its examples run with doctest's
ELLIPSIS and NORMALIZE_WHITESPACE, so an example that prints source lines writes
`# ...` for them.
"""
import doctest
import importlib
import inspect
import pkgutil

import pytest

import tapeir as tp

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _walk_error(name):
    raise ImportError(f"cannot import {name} to collect its docstring examples")


def _walk(package: str) -> list[str]:
    mod = importlib.import_module(package)
    return [package] + sorted(m.name for m in pkgutil.walk_packages(mod.__path__, package + ".", onerror=_walk_error))


# each layer folder maps onto its own subpackage (pyproject's package-dir): walk each, and
# only the face's own folder for `tapeir` (run from a checkout, its __path__ also holds the root)
MODULES = sorted({"tapeir", *(f"tapeir.{m.name}" for m in pkgutil.iter_modules(tp.__path__[:1])
                              if not m.ispkg)}
                 | {m for p in ("tapeir.ir", "tapeir.frontend", "tapeir.passes", "tapeir.backends") for m in _walk(p)})


def test_the_walk_finds_the_package():
    # an empty or partial walk would make the doctest tests below pass vacuously
    expected = {"tapeir.frontend.functions", "tapeir.frontend.tensor", "tapeir.frontend.tracer",
                "tapeir.ir.graph", "tapeir.passes.autodiff", "tapeir.backends.numpy_backend"}
    assert expected <= set(MODULES), sorted(expected - set(MODULES))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch, tmp_path):
    # Traced lines are recorded relative to the cwd: a scratch cwd makes them the same
    # wherever pytest runs, and keeps any file an example writes out of the checkout.
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, f"{runner.failures} failing example(s) in {name}:\n" + "".join(report)


def _doc(obj) -> str:
    return (obj.fget if isinstance(obj, property) else obj).__doc__ or ""


def test_public_functions_have_examples():
    functions = {n: getattr(tp, n) for n in tp.__all__ if inspect.isfunction(getattr(tp, n))}
    assert len(functions) > 60, sorted(functions)  # not vacuous: __all__ lists the API
    missing = sorted(n for n, f in functions.items() if ">>>" not in _doc(f))
    assert not missing, f"public functions without a docstring example: {', '.join(missing)}"


def test_public_classes_have_examples():
    classes = [n for n in tp.__all__ if inspect.isclass(getattr(tp, n))]
    missing = sorted(n for n in classes if ">>>" not in _doc(getattr(tp, n)))
    assert not missing, f"public classes without a docstring example: {', '.join(missing)}"


def test_tensor_methods_and_properties_have_examples():
    members = {n: m for n, m in vars(tp.Tensor).items()
               if not n.startswith("_") and (inspect.isfunction(m) or isinstance(m, property))}
    assert {"shape", "dtype", "reshape", "sum", "T"} <= set(members)
    missing = sorted(n for n, m in members.items() if ">>>" not in _doc(m))
    assert not missing, f"Tensor members without a docstring example: {', '.join(missing)}"
