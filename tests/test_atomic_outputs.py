"""The one atomic writer under every output: unique temporary files, no symlink followed, umask modes,
the previous file kept when a write fails."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from zsclip import OutputError
from zsclip.outputs.atomic import AtomicFile, atomic_path, write_atomically


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("previous\n")

    def explode(handle):
        handle.write("half a fil")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_atomically(target, explode)
    assert target.read_text() == "previous\n" and os.listdir(tmp_path) == ["results.json"]


def test_a_planted_partial_symlink_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "results.csv.partial").symlink_to(victim)
    write_atomically(tmp_path / "results.csv", "a,b\n")
    assert victim.read_text() == "keep me" and (tmp_path / "results.csv").read_text() == "a,b\n"
    abandoned = AtomicFile(tmp_path / "results.csv")
    abandoned.file.write("rows so far")
    kept = abandoned.abandon()  # NAME.partial is taken by the link: the rows stay under the unique name
    assert kept != tmp_path / "results.csv.partial" and kept.read_text() == "rows so far"
    assert victim.read_text() == "keep me"


def test_concurrent_writers_never_share_a_temporary_and_the_last_rename_wins_whole(tmp_path):
    target = tmp_path / "out.txt"
    texts = [f"{i}\n" * 20000 for i in range(8)]
    threads = [threading.Thread(target=write_atomically, args=(target, text)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_text() in texts and os.listdir(tmp_path) == ["out.txt"]


def test_files_get_the_mode_the_umask_gives(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomically(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.bin") as temporary:
            temporary.write_bytes(b"y")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640


def test_an_unwritable_place_is_one_output_error(tmp_path):
    with pytest.raises(OutputError, match="cannot write .*missing"):
        write_atomically(tmp_path / "missing" / "out.txt", "x")
    with pytest.raises(OutputError, match="cannot write"):
        write_atomically(tmp_path / ("x" * 300 + ".txt"), "x")  # name too long
