"""Atomic writes: the mode asked for whatever the umask, nothing left beside, never through a link."""

import os
import stat

import pytest

from nexa_ops import fs


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o755])
def test_atomic_write_has_the_mode_asked_for_and_leaves_nothing(tmp_path, mode):
    old = os.umask(0o002)
    try:
        path = fs.atomic_write_bytes(tmp_path / "sub" / "f.json", b"{}", mode)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"{}" and stat.S_IMODE(path.stat().st_mode) == mode
    assert os.listdir(path.parent) == ["f.json"]


def test_atomic_write_replaces_a_link_and_never_writes_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("mine")
    (tmp_path / "f.json").symlink_to(victim)
    fs.atomic_write_text(tmp_path / "f.json", "new")
    assert victim.read_text() == "mine" and not (tmp_path / "f.json").is_symlink()
    assert (tmp_path / "f.json").read_text() == "new"


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    (tmp_path / "f.json").write_text("old")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fs.os, "replace", refuse)
    with pytest.raises(OSError):
        fs.atomic_write_text(tmp_path / "f.json", "new")
    assert (tmp_path / "f.json").read_text() == "old" and os.listdir(tmp_path) == ["f.json"]
