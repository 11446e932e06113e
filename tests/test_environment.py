"""requirements.txt and environment.yml pin the same packages with the same specifiers; the floors
admit Colab's runtime (../shared/COLAB.md) and the torch range admits the CPU wheel used here."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQ_LINE = re.compile(r"^([A-Za-z0-9_.\-]+)\s*([<>=!~].*)?$")


def parse(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line:
            continue
        m = REQ_LINE.match(line)
        assert m, f"unparsable requirement {line!r}"
        pins[m.group(1).lower()] = (m.group(2) or "").replace(" ", "")
    return pins


def requirements():
    return parse((ROOT / "requirements.txt").read_text().splitlines())


def environment_pip_section():
    lines, inside = [], False
    for raw in (ROOT / "environment.yml").read_text().splitlines():
        if raw.strip() == "- pip:":
            inside = True
            continue
        if inside and raw.strip().startswith("- "):
            lines.append(raw.strip()[2:])
    return parse(lines)


def test_environment_yml_matches_requirements():
    assert requirements() == environment_pip_section()


def satisfies(version: str, spec: str) -> bool:
    from packaging.specifiers import SpecifierSet
    return SpecifierSet(spec).contains(version, prereleases=True)


def test_floors_admit_colab_and_local_versions():
    pins = requirements()
    colab = {"torch": "2.11.0", "transformers": "5.15.0", "datasets": "4.0.0", "tokenizers": "0.22.2",
             "accelerate": "1.14.0", "safetensors": "0.8.0", "matplotlib": "3.10.0", "numpy": "2.1.3",
             "tqdm": "4.67.3", "ipywidgets": "7.7.1"}
    here = {"torch": "2.13.0", "transformers": "5.24.0", "datasets": "5.2.0", "tokenizers": "0.23.0",
            "nbval": "0.11.0", "jupyterlab": "4.6.0", "ipywidgets": "8.1.0", "vadersentiment": "3.3.2"}
    for versions in (colab, here):
        for name, version in versions.items():
            assert satisfies(version, pins[name]), f"{name} {version} not admitted by {pins[name]!r}"
    assert not satisfies("4.57.0", pins["transformers"]), "transformers v4 must be excluded (v5 APIs)"
