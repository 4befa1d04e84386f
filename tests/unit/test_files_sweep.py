"""Temporary files that a writer left when it died mid-write (``kill -9`` between
write_atomic's temporary file and its rename) are swept when a batch writes its report:
only ours, only old ones, anywhere under the output folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

from comfyfn._files import ABANDONED_AFTER, sweep_temporaries, write_atomic
from comfyfn.batch.queued import StoredRecords
from comfyfn.batch.report import write_report_to


def left_behind(folder: Path, name: str, age: float) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half an image")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_only_old_temporaries_of_ours_go(tmp_path):
    old = ABANDONED_AFTER + 5
    gone = [
        left_behind(tmp_path, "images/.tmp-0123456789abcdef.png", old),
        left_behind(tmp_path, "covers/wechat/.tmp-fedcba9876543210.webp", old),
        left_behind(tmp_path, ".tmp-00000000000000ff", old),
    ]
    kept = [
        left_behind(tmp_path, "images/.tmp-aaaaaaaaaaaaaaaa.png", 1),  # a live writer's
        left_behind(tmp_path, "images/.tmp-notes.txt", old),  # not a name we make
        left_behind(tmp_path, "images/cat_1.png", old),
        left_behind(tmp_path, "images/.tmp-0123456789abcdef.png.bak", old),
    ]
    assert sweep_temporaries(tmp_path) == 3
    assert not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept)
    assert sweep_temporaries(tmp_path) == 0


def test_folders_and_links_of_that_name_stay_and_nothing_fails(tmp_path, monkeypatch):
    old = ABANDONED_AFTER * 2
    folder = tmp_path / "images" / ".tmp-0123456789abcdef.png"
    folder.mkdir(parents=True)
    outside = left_behind(tmp_path.parent / f"{tmp_path.name}-outside", "keep.png", old)
    link = tmp_path / "images" / ".tmp-fedcba9876543210.png"
    link.symlink_to(outside)
    stuck = left_behind(tmp_path, "images/.tmp-00000000000000aa.png", old)
    real_unlink = Path.unlink

    def refused(path, missing_ok=False):
        if path == stuck:
            raise PermissionError(13, "Permission denied", str(path))
        return real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refused)
    assert sweep_temporaries(tmp_path) == 0
    assert folder.is_dir() and link.is_symlink() and outside.exists() and stuck.exists()


def test_a_file_of_write_atomic_is_what_the_sweep_recognises(tmp_path, monkeypatch):
    made: list[str] = []
    real_replace = os.replace

    def keep_temporary(src, dst):
        made.append(os.path.basename(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", keep_temporary)
    write_atomic(tmp_path / "images" / "x.png", b"png")
    (name,) = made
    left_behind(tmp_path, f"images/{name}", ABANDONED_AFTER + 1)
    assert sweep_temporaries(tmp_path) == 1


def test_a_batch_report_sweeps_its_output_folder(tmp_path):
    stale = left_behind(tmp_path, "images/.tmp-0123456789abcdef.png", ABANDONED_AFTER * 2)
    write_report_to(StoredRecords([]), tmp_path, None, 1.0, {})
    assert not stale.exists()
    assert (tmp_path / "summary.json").exists() and (tmp_path / "results.csv").exists()
