"""helpers.cache: a changed spec builds a new artifact, an interrupted build never loads, a dead
build's leftovers are removed, two processes build once."""

import json
import multiprocessing as mp
import os
import threading
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
    assert sorted(p.name for p in path.iterdir()) == [cache.MANIFEST_FILE, cache.SPEC_FILE, "value.txt"]


def test_the_cache_knows_what_it_wrote(tmp_path):
    """spec.json alone is not a built artifact: a deleted or cut file counts as not built and is
    rebuilt, a flipped byte is found by its digest, and a spec.json that is not UTF-8 is damage, not a
    traceback."""
    path = tmp_path / "model"

    def build(tmp):
        (tmp / "weights.bin").write_bytes(bytes(range(256)) * 4)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "config.json").write_text("{}")

    cache.build_artifact(path, {"v": 1}, build)
    manifest = cache.read_manifest(path)
    assert set(manifest) == {"weights.bin", "sub/config.json"} and manifest["weights.bin"][0] == 1024
    assert cache.is_built(path, {"v": 1}) and cache.artifact_problems(path, digests=True) == []
    (path / "weights.bin").unlink()  # a user deleting the model to force a rebuild
    assert not cache.is_built(path, {"v": 1})
    assert cache.artifact_problems(path) == [f"{path / 'weights.bin'} is missing"]
    cache.build_artifact(path, {"v": 1}, build)  # rebuilt, not "already built"
    assert (path / "weights.bin").stat().st_size == 1024
    with open(path / "weights.bin", "r+b") as f:  # a half-copied file
        f.truncate(100)
    assert not cache.is_built(path, {"v": 1}) and "has 100 bytes, 1024 were written" in cache.artifact_problems(path)[0]
    cache.build_artifact(path, {"v": 1}, build)
    data = bytearray((path / "weights.bin").read_bytes())
    data[10] ^= 0xFF  # one flipped byte: same size, so is_built (sizes) passes and the digest does not
    (path / "weights.bin").write_bytes(bytes(data))
    assert cache.is_built(path, {"v": 1})
    with pytest.raises(ValueError, match="weights.bin is not the file that was written"):
        cache.verify_artifact(path)
    (path / cache.SPEC_FILE).write_bytes(b"\xff\xfe not utf-8")
    assert not cache.is_built(path, {"v": 1})  # damaged, no UnicodeDecodeError
    (path / cache.MANIFEST_FILE).unlink()
    cache.build_artifact(path, {"v": 1}, build)
    assert cache.is_built(path, {"v": 1}) and cache.artifact_problems(path, digests=True) == []


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


def _stopped_build(path, ready):
    """A build that holds the lock and never ends on its own, as one stopped with Ctrl-Z would."""
    def build(tmp):
        ready.set()
        time.sleep(60)
    cache.build_artifact(path, {"v": 1}, build)


def test_a_build_waiting_for_a_lock_says_so_and_names_the_holder(tmp_path, monkeypatch, capsys):
    """A build whose lock holder is stopped waited with no output: after LOCK_NOTICE_S it says it is
    waiting, for which lock and which process."""
    path = tmp_path / "shared"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_stopped_build, args=(path, ready))
    holder.start()
    try:
        assert ready.wait(60)
        monkeypatch.setattr(cache, "LOCK_NOTICE_S", 0.3)
        # the waiting call runs here, in a thread, so its message is captured; the holder is then ended
        t = threading.Thread(target=cache.build_artifact, args=(path, {"v": 1}, write_value(3)), daemon=True)
        t.start()
        time.sleep(1.5)
        out = capsys.readouterr().out
        assert f"waiting for {path.with_name('shared.lock')}" in out and f"process {holder.pid}" in out
    finally:
        holder.kill()
        holder.join(10)
    t.join(30)
    assert (path / "value.txt").read_text() == "3"  # once the holder is gone, the waiter builds
