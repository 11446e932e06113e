"""pyproject.toml declares the dependencies (runtime, `dev`, `bench`); requirements.txt,
benchmarks/requirements.txt and environment.yml install exactly those; the floors admit Colab's
runtime (../shared/COLAB.md) and the torch range admits the CPU wheel used here."""

import ast
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import helpers

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins(requirements) -> dict[str, str]:
    out = {}
    for line in requirements:
        req = Requirement(line)
        out[req.name.lower()] = str(req.specifier)
    return out


def lines(path) -> list[str]:
    return [ln.split("#")[0].strip() for ln in Path(path).read_text().splitlines() if ln.split("#")[0].strip()]


def test_requirement_files_install_the_project_and_its_extras():
    assert lines(ROOT / "requirements.txt") == ["-e .[dev]"]
    assert lines(ROOT / "benchmarks" / "requirements.txt") == ["-e .[bench]"]
    assert set(PROJECT["optional-dependencies"]) == {"dev", "bench"}


def test_environment_yml_installs_cpu_torch_and_the_project():
    text = (ROOT / "environment.yml").read_text()
    assert "pytorch" not in re.findall(r"^\s*-\s*(\S+)\s*$", text, re.M), "the retired pytorch channel"
    assert "cpuonly" not in text
    pip_lines = [ln.strip()[2:].split("#")[0].strip() for ln in text.split("- pip:")[1].splitlines()
                 if ln.strip().startswith("- ")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pip_lines
    assert "-e .[dev]" in pip_lines
    torch_pin = next(ln for ln in pip_lines if ln.startswith("torch"))
    from packaging.specifiers import SpecifierSet
    assert SpecifierSet(pins(PROJECT["dependencies"])["torch"]).contains(torch_pin.split("==")[1])


def test_version_has_one_source():
    assert PROJECT["dynamic"] == ["version"] and "version" not in PROJECT
    from importlib.metadata import version
    assert version("dpo-from-scratch") == helpers.__version__
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_imported_packages_are_declared():
    # every third-party top-level import in helpers/ comes from a declared distribution
    declared = set(pins(PROJECT["dependencies"]))
    module_to_dist = {"yaml": "pyyaml", "sklearn": "scikit-learn", "vadersentiment": "vadersentiment"}
    stdlib = __import__("sys").stdlib_module_names
    found = set()
    for path in (ROOT / "helpers").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in (n.split(".")[0] for n in names):
                if name in stdlib or name in ("helpers", "__future__"):
                    continue
                found.add(module_to_dist.get(name.lower(), name.lower()).replace("_", "-"))
    declared = {d.replace("_", "-") for d in declared}
    assert found and found <= declared, f"imported but not declared: {sorted(found - declared)}"


def satisfies(version: str, spec: str) -> bool:
    from packaging.specifiers import SpecifierSet
    return SpecifierSet(spec).contains(version, prereleases=True)


def test_floors_admit_colab_and_local_versions():
    runtime = pins(PROJECT["dependencies"])
    dev = pins(PROJECT["optional-dependencies"]["dev"])
    colab = {"torch": "2.11.0", "transformers": "5.15.0", "datasets": "4.0.0", "tokenizers": "0.22.2",
             "accelerate": "1.14.0", "safetensors": "0.8.0", "matplotlib": "3.10.0", "numpy": "2.1.3",
             "tqdm": "4.67.3", "ipywidgets": "7.7.1"}
    here = {"torch": "2.13.0", "transformers": "5.24.0", "datasets": "5.2.0", "tokenizers": "0.23.0",
            "ipywidgets": "8.1.0", "vadersentiment": "3.3.2"}
    for versions in (colab, here):
        for name, version in versions.items():
            assert satisfies(version, runtime[name]), f"{name} {version} not admitted by {runtime[name]!r}"
    for name, version in {"nbval": "0.11.0", "jupyterlab": "4.6.0"}.items():
        assert satisfies(version, dev[name])
    assert not satisfies("4.57.0", runtime["transformers"]), "transformers v4 must be excluded (v5 APIs)"
