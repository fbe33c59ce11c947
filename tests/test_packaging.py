"""The import name is ``nlpmon`` (the folder is ``service/``): the wheel holds ``nlpmon/`` only, it imports from
outside the checkout, and pyproject's package list names every sub-package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_list_names_every_subpackage() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"] == {"nlpmon": "service"}
    folders = {p.parent.relative_to(ROOT / "service") for p in (ROOT / "service").rglob("*.py")
               if "__pycache__" not in p.parts}
    expected = {"nlpmon" + "".join("." + part for part in f.parts) for f in folders}
    data = {"nlpmon.observability.static"}  # the pages' script and style sheet (package data only)
    assert set(cfg["packages"]) == expected | data
    assert cfg["package-data"]["nlpmon.observability.static"] == ["*.js", "*.css"]
    missing = sorted(str(f) for f in folders if not (ROOT / "service" / f / "__init__.py").exists())
    assert not missing, f"folders without __init__.py (namespace packages are not listed): {missing}"


def test_no_module_of_the_package_imports_itself_by_name() -> None:
    """Inside service/ every import of the package is relative: the folder name never leaks into code."""
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "service").rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if line.lstrip().startswith(("from service", "import service", "from nlpmon", "import nlpmon"))]
    assert not offenders


@pytest.mark.slow
def test_wheel_installs_as_nlpmon(tmp_path: Path) -> None:
    """`pip install .` gives `import nlpmon` (the wheel has nlpmon/ and no service/), run from outside the checkout."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(wheel_dir), str(ROOT)], check=True, timeout=300, capture_output=True)
    (wheel,) = wheel_dir.glob("nlpmon-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"nlpmon/__init__.py", "nlpmon/py.typed", "nlpmon/observability/static/nlpmon.js"} <= set(names)
    assert not [n for n in names if n.startswith("service/")]
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300, capture_output=True)
    code = ("import nlpmon, nlpmon.cli, nlpmon.events.builders as b; "
            "assert nlpmon.__file__.startswith(sys.argv[1]), nlpmon.__file__; "
            "import importlib.util as u; assert u.find_spec('service') is None or "
            "not u.find_spec('service').origin.startswith(sys.argv[1]); print(nlpmon.cli.__name__)")
    out = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); " + code,
                          str(target)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "nlpmon.cli"
