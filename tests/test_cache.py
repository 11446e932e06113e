"""helpers.cache: a changed spec builds a new artifact, an interrupted build never loads, a dead
build's leftovers are removed, two processes build once."""

import json
import multiprocessing as mp
import os
import time

import pytest

from helpers import cache


def write_value(value):
    def build(tmp):
        (tmp / "value.txt").write_text(str(value))
    return build


def test_spec_names_the_folder_and_a_changed_spec_builds_a_new_artifact(tmp_path):
    a = cache.artifact_path(tmp_path, "run", {"lr": 1e-3, "steps": 10})
    b = cache.artifact_path(tmp_path, "run", {"steps": 10, "lr": 1e-3})
    c = cache.artifact_path(tmp_path, "run", {"lr": 1e-3, "steps": 11})
    assert a == b != c and a.name.startswith("run-")
    cache.build_artifact(a, {"lr": 1e-3, "steps": 10}, write_value(1))
    cache.build_artifact(c, {"lr": 1e-3, "steps": 11}, write_value(2))
    assert (a / "value.txt").read_text() == "1" and (c / "value.txt").read_text() == "2"
    assert json.loads((a / cache.SPEC_FILE).read_text()) == {"lr": 1e-3, "steps": 10}


def test_a_hit_does_not_rebuild_and_a_fixed_path_with_another_spec_does(tmp_path):
    calls = []

    def build(tmp):
        calls.append(1)
        (tmp / "x").write_text(str(len(calls)))

    path = tmp_path / "stage"
    cache.build_artifact(path, {"v": 1}, build)
    cache.build_artifact(path, {"v": 1}, build)
    assert len(calls) == 1
    cache.build_artifact(path, {"v": 2}, build)  # same folder, other settings: rebuilt
    assert len(calls) == 2 and (path / "x").read_text() == "2" and cache.is_built(path, {"v": 2})
    cache.build_artifact(path, {"v": 2}, build, force=True)
    assert len(calls) == 3


def test_an_interrupted_build_never_loads_and_its_leftovers_go(tmp_path):
    path = tmp_path / "model"

    def crash(tmp):
        (tmp / "half.bin").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.build_artifact(path, {"v": 1}, crash)
    assert not path.exists() and not cache.is_built(path, {"v": 1})
    assert not list(tmp_path.glob("model.tmp-*"))
    # a process killed outright leaves its temporary folder: the next build removes it
    dead = tmp_path / "model.tmp-999999"
    dead.mkdir()
    (dead / "half.bin").write_text("half")
    cache.build_artifact(path, {"v": 1}, write_value(7))
    assert not dead.exists() and (path / "value.txt").read_text() == "7"
    assert sorted(p.name for p in path.iterdir()) == [cache.SPEC_FILE, "value.txt"]


def _slow_build(path, log):
    def build(tmp):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        (tmp / "value.txt").write_text("ok")
    cache.build_artifact(path, {"v": 1}, build)


def test_two_processes_build_once(tmp_path):
    path, log = tmp_path / "shared", tmp_path / "log.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_slow_build, args=(path, log)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(log.read_text().split()) == 1, "the second process should wait and load, not rebuild"
    assert (path / "value.txt").read_text() == "ok"


def test_fingerprints_change_with_content(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    first = cache.file_fingerprint(f)
    f.write_bytes(b"abd")
    assert cache.file_fingerprint(f) != first
    records = [{"prompt": "p", "chosen": " a", "rejected": " b"}]
    assert cache.records_fingerprint(records) != cache.records_fingerprint([{**records[0], "chosen": " c"}])
