"""One cache for every artifact the course builds: corpus, tokenizer, models, pairs, reward models,
DPO runs.

An artifact is a folder. Next to what it holds it carries ``spec.json``: *everything that determines
it* -- the settings of the call and the fingerprints of its inputs. A folder is used only when its
``spec.json`` equals the spec asked for, so a changed argument never returns an old artifact;
callers also put ``fingerprint(spec)`` into the folder name (``artifact_path``), so two settings
never compete for one folder and nothing built under other settings is ever deleted.

A build writes into a temporary sibling (``<name>.tmp-<pid>``), writes ``spec.json`` last and
renames the folder into place: an interrupted build never loads (no spec, wrong name). A file lock
(``<name>.lock``) makes two processes that want the same artifact at once (two notebooks started
together) build it once: the second waits, then loads. A temporary sibling found while holding the
lock belongs to a build that died: it is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

SPEC_FILE = "spec.json"


def _canonical(spec) -> str:
    return json.dumps(spec, sort_keys=True, default=str)


def fingerprint(spec) -> str:
    """A short hash of a JSON-able spec (dict keys in any order give the same hash)."""
    return hashlib.sha256(_canonical(spec).encode()).hexdigest()[:12]


def file_fingerprint(path: str | os.PathLike) -> str:
    """A short content hash of a file (e.g. the SFT weights a DPO run started from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def records_fingerprint(records, columns=("prompt", "chosen", "rejected")) -> str:
    """A short hash of preference records' text (a list of dicts or a ``datasets.Dataset``), in order."""
    h = hashlib.sha256()
    for record in records:
        row = [record[c] for c in columns]
        if "chosen_ended" in record:  # flags that change the tokenization (helpers.data): part of the data
            row += [record["chosen_ended"], record["rejected_ended"]]
        if "chosen_prob" in record:  # a soft label (helpers.pairs.annotate_pairs) is part of the target
            row += [float(record["chosen_prob"])]
        h.update(json.dumps(row).encode())
        h.update(b"\n")
    return h.hexdigest()[:12]


def artifact_path(parent: str | os.PathLike, name: str, spec) -> Path:
    """``parent/<name>-<fingerprint(spec)>``: the folder of the artifact ``spec`` describes."""
    return Path(parent) / f"{name}-{fingerprint(spec)}"


def is_built(path: str | os.PathLike, spec) -> bool:
    """Does ``path`` hold a finished artifact built from exactly ``spec``?"""
    spec_file = Path(path) / SPEC_FILE
    try:
        return _canonical(json.loads(spec_file.read_text())) == _canonical(json.loads(_canonical(spec)))
    except (OSError, json.JSONDecodeError):
        return False


def build_artifact(path: str | os.PathLike, spec, build: Callable[[Path], None], force: bool = False) -> Path:
    """The artifact at ``path`` for ``spec``: returned as is when built, else built now.

    Args:
        path: the artifact's folder (usually ``artifact_path(...)``).
        spec: JSON-able description of everything the artifact depends on.
        build: ``build(tmp)`` writes the artifact's files into the empty folder ``tmp``.
        force: rebuild even when a finished artifact is there.
    Returns:
        ``path``.
    """
    path = Path(path)
    if not force and is_built(path, spec):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        if not force and is_built(path, spec):  # another process built it while we waited
            return path
        if path.exists() and not (path / SPEC_FILE).exists() and any(path.iterdir()):
            # not an artifact of this cache (no spec.json): someone's files -- never delete them
            raise ValueError(f"{path} exists and holds files this cache did not write (no {SPEC_FILE}); "
                             f"move them or choose another path")
        for stale in path.parent.glob(path.name + ".tmp-*"):  # a build that died: we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.mkdir()
        try:
            build(tmp)
            (tmp / SPEC_FILE).write_text(json.dumps(json.loads(_canonical(spec)), indent=1, sort_keys=True))
            if path.exists():  # forced, or this cache's artifact of other settings at a fixed path: replaced
                shutil.rmtree(path)
            tmp.rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path
