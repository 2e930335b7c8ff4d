"""The benchmarks are not run by the suite (they print figures, they assert no times), but they
must keep importing as the code under them moves: a renamed module should fail here, not on the
day someone needs the figures."""

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__"))
def test_the_benchmark_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert module.__doc__, f"bench/{name}.py says in its docstring what it measures and how to run it"
