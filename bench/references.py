"""The PyTorch reference modules of tests/ (`torch_reference*.py`), for the benchmarks.

tests/ is not a package (pytest adds it to the import path for the tests), so the benchmarks
load these files by path and register them in `sys.modules` under their own names; their
imports of each other (`import torch_reference`) then resolve.
"""
import importlib.util
import pathlib
import sys

TESTS = pathlib.Path(__file__).resolve().parents[1] / 'tests'


def load(name: str):
  """tests/<name>.py as module `name` (torch_reference first: the others import it)."""
  if name != 'torch_reference':
    load('torch_reference')
  if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(name, TESTS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
  return sys.modules[name]


def names() -> list[str]:
  """Module names of every tests/torch_reference*.py."""
  return [p.stem for p in sorted(TESTS.glob('torch_reference*.py'))]
