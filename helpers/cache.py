"""One cache for every artifact the course builds: corpus, tokenizer, models, pairs, reward models,
DPO runs.

An artifact is a folder. Next to what it holds it carries ``spec.json``: *everything that determines
it* -- the settings of the call and the fingerprints of its inputs. A folder is used only when its
``spec.json`` equals the spec asked for, so a changed argument never returns an old artifact;
callers also put ``fingerprint(spec)`` into the folder name (``artifact_path``), so two settings
never compete for one folder and nothing built under other settings is ever deleted.

A build writes into a temporary sibling (``<name>.tmp-<pid>``), records what it wrote in
``manifest.json`` (size and SHA-256 of every file), writes ``spec.json`` last and renames the folder
into place: an interrupted build never loads (no spec, wrong name). ``is_built`` also checks that
every file of the manifest is there at its size -- a deleted model file, a half-copied or
half-deleted folder counts as not built (and is rebuilt) -- and ``verify_artifact`` checks the
digests, for a load that must not take a flipped byte (a restore from a save does). A file lock
(``<name>.lock``) makes two processes that want the same artifact at once (two notebooks started
together) build it once: the second waits, then loads. A temporary sibling found while holding the
lock belongs to a build that died: it is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

SPEC_FILE = "spec.json"
MANIFEST_FILE = "manifest.json"  # {relative path: [size in bytes, sha256]} of every file the build wrote
LOCK_NOTICE_S = 3.0  # a build waiting this long for another's lock says so, and for which process


def _canonical(spec) -> str:
    return json.dumps(spec, sort_keys=True, default=str)


def fingerprint(spec) -> str:
    """A short hash of a JSON-able spec (dict keys in any order give the same hash)."""
    return hashlib.sha256(_canonical(spec).encode()).hexdigest()[:12]


def _sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str:
    """A short content hash of a file (e.g. the SFT weights a DPO run started from)."""
    return _sha256(path)[:12]


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


def _files(folder: Path) -> list[Path]:
    """Every file under ``folder`` but the cache's own records, in a fixed order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix()
                  not in (SPEC_FILE, MANIFEST_FILE))


def write_manifest(folder: Path) -> dict:
    """Record size and SHA-256 of every file in ``folder`` (``MANIFEST_FILE``); returns the record."""
    manifest = {p.relative_to(folder).as_posix(): [p.stat().st_size, _sha256(p)] for p in _files(folder)}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def read_manifest(path: str | os.PathLike) -> dict | None:
    """An artifact's manifest, or None when it is missing or unreadable."""
    try:
        manifest = json.loads((Path(path) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, cut, not UTF-8 (UnicodeDecodeError is a ValueError)
        return None
    ok = isinstance(manifest, dict) and all(isinstance(v, list) and len(v) == 2 for v in manifest.values())
    return manifest if ok else None


def artifact_problems(path: str | os.PathLike, digests: bool = False) -> list[str]:
    """What is wrong with the files of the artifact at ``path`` against its manifest: a file missing,
    of another size, or (``digests``) of other content; [] when it is whole. (Files added later, such
    as a cached evaluation next to a run, are not the build's and are not checked.)"""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        return [f"{path / MANIFEST_FILE} is missing or damaged"]
    problems = []
    for rel, (size, digest) in sorted(manifest.items()):
        f = path / rel
        if not f.is_file():
            problems.append(f"{f} is missing")
        elif f.stat().st_size != size:
            problems.append(f"{f} has {f.stat().st_size} bytes, {size} were written")
        elif digests and _sha256(f) != digest:
            problems.append(f"{f} is not the file that was written (its SHA-256 differs)")
    return problems


def verify_artifact(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming every damaged file of the artifact at ``path`` (digests checked)."""
    problems = artifact_problems(path, digests=True)
    if problems:
        raise ValueError(f"the artifact {path} is damaged: " + "; ".join(problems))


def is_built(path: str | os.PathLike, spec) -> bool:
    """Does ``path`` hold a finished artifact built from exactly ``spec``, with every file it wrote
    present at its size? (Digests: ``verify_artifact``.)"""
    spec_file = Path(path) / SPEC_FILE
    try:
        same = _canonical(json.loads(spec_file.read_text(encoding="utf-8"))) == _canonical(json.loads(_canonical(spec)))
    except (OSError, ValueError):  # missing, cut, not UTF-8: damaged, so not built
        return False
    return same and not artifact_problems(path)


@contextlib.contextmanager
def _locked(path: Path):
    """Hold ``<name>.lock`` while building ``path``; ``<name>.lock.owner`` says who holds it. A wait of
    more than ``LOCK_NOTICE_S`` is announced, naming the holder: a build stopped with Ctrl-Z holds
    its lock until it is resumed or ended, and the waiting one would otherwise sit there in silence."""
    lock_file = path.with_name(path.name + ".lock")
    owner_file = path.with_name(path.name + ".lock.owner")
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=LOCK_NOTICE_S)
    except Timeout:
        try:
            owner = owner_file.read_text(encoding="utf-8").strip()
        except (OSError, ValueError):
            owner = "a process that did not say who it is"
        print(f"waiting for {lock_file}: another build of {path.name} holds it ({owner}). It goes on when that "
              "build ends; a build stopped with Ctrl-Z waits until it is resumed (fg) or ended.", flush=True)
        lock.acquire()
    try:
        owner_file.write_text(f"process {os.getpid()}: {' '.join(sys.argv)[:120]}", encoding="utf-8")
        yield
    finally:
        owner_file.unlink(missing_ok=True)
        lock.release()


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
    with _locked(path):
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
            write_manifest(tmp)
            (tmp / SPEC_FILE).write_text(json.dumps(json.loads(_canonical(spec)), indent=1, sort_keys=True))
            if path.exists():  # forced, or this cache's artifact of other settings at a fixed path: replaced
                shutil.rmtree(path)
            tmp.rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path
