"""Store durability (issue 37): every shard is on disk under its name before a manifest that lists it
replaces the old one, and the manifest's rename is synced too. Proven on the real write path of
`zsclip embed` by recording the fsync and rename calls it makes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from zsclip import shapes
from zsclip.cli import main
from zsclip.store.format import MANIFEST


def _photos(root: Path, count: int) -> Path:
    root.mkdir()
    for index, spec in enumerate(shapes.sample_specs(count, seed=3)):
        shapes.render(spec).save(root / f"{index}.png")
    return root


def test_shards_and_their_folder_are_synced_before_the_manifest_lists_them(tmp_path, monkeypatch):
    photos = _photos(tmp_path / "photos", 5)
    store = tmp_path / "s.zse"
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync-dir" if os.path.isdir(target) else "fsync-file", target))
        return real_fsync(fd)

    def replace(source, target, *args, **kwargs):
        events.append(("replace", os.fspath(source), os.fspath(target)))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    # two images per shard: three shard commits, each followed by a manifest commit
    result = CliRunner().invoke(main, ["embed", str(photos), "-o", str(store), "-m", "demo", "-j", "0",
                                       "--precision", "fp32", "--commit-every", "2"])
    assert result.exit_code == 0, result.output
    folder = str(store.resolve())
    events = [e for e in events if e[1].startswith(folder)]  # the store's own files and folder
    shards = [shard["file"] for shard in json.loads((store / MANIFEST).read_text())["shards"]]
    assert len(shards) == 3
    manifest_replaces = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == f"{folder}/{MANIFEST}"]
    assert len(manifest_replaces) == 1 + 3  # created empty, then once per shard
    for shard in shards:
        target = f"{folder}/{shard}"
        renamed = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == target)
        temporary = events[renamed][1]
        synced = [i for i, e in enumerate(events[:renamed]) if e == ("fsync-file", temporary)]
        assert synced, f"{shard} renamed into place before its bytes were synced"
        listed = next(i for i in manifest_replaces if i > renamed)  # the manifest commit that lists the shard
        assert any(e == ("fsync-dir", folder) for e in events[renamed + 1:listed]), \
            f"the folder entry of {shard} was not synced before the manifest listing it was renamed"
        manifest_temporary = events[listed][1]
        assert any(e == ("fsync-file", manifest_temporary) for e in events[:listed])
    for index in manifest_replaces:
        following = events[index + 1:index + 2]
        assert following == [("fsync-dir", folder)], "the manifest's rename was not synced"
