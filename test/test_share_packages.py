"""scripts/share_packages.py: a second venv gets the torch family as hard links, nothing else.

Real files in two folders laid out as venvs; each distribution is a dist-info folder with a
RECORD, as pip writes them.
"""

from __future__ import annotations

import errno
import importlib.util
import os
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "share_packages.py"


def _load():
    spec = importlib.util.spec_from_file_location("share_packages", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


share_packages = _load()


def _install(site: Path, name: str, version: str, files: dict[str, bytes]) -> None:
    """Write a distribution as pip does: its files, then its dist-info with METADATA and RECORD."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    record = [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    for relative, content in files.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        record.append(f"{relative},,")
    record.append("../../../bin/torchrun,,")  # a console script outside site-packages
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture
def venvs(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    source, target = tmp_path / "venv-a", tmp_path / "venv-b"
    source_site, target_site = (share_packages.site_packages(v) for v in (source, target))
    source_site.mkdir(parents=True)
    target_site.mkdir(parents=True)
    _install(source_site, "torch", "2.14.1", {"torch/__init__.py": b"x = 1\n",
                                               "torch/lib/libtorch.so": b"\0" * 64})
    _install(source_site, "nvidia-cudnn-cu13", "9.1", {"nvidia/cudnn/lib/libcudnn.so": b"c"})
    _install(source_site, "rclpy", "9.1.0", {"rclpy/__init__.py": b"kilted\n"})
    return source, target, source_site, target_site


def test_the_torch_family_is_linked_and_pip_sees_it_installed(venvs) -> None:
    source, target, source_site, target_site = venvs
    linked = share_packages.share(source, target)
    assert sorted(linked) == ["nvidia-cudnn-cu13==9.1", "torch==2.14.1"]
    for relative in ("torch/lib/libtorch.so", "nvidia/cudnn/lib/libcudnn.so",
                     "torch-2.14.1.dist-info/RECORD"):
        assert os.path.samefile(source_site / relative, target_site / relative), relative
    # the ROS wheels of one distribution never reach the other's venv
    assert not (target_site / "rclpy").exists()
    assert not list(target_site.glob("rclpy-*"))
    # nor the console scripts, which name the source venv's python
    assert not (target / "bin" / "torchrun").exists()
    from importlib.metadata import distributions
    names = {d.metadata["Name"] for d in distributions(path=[str(target_site)])}
    assert names == {"torch", "nvidia-cudnn-cu13"}


def test_a_distribution_the_target_has_is_left_alone(venvs) -> None:
    source, target, source_site, target_site = venvs
    _install(target_site, "torch", "2.9.1", {"torch/__init__.py": b"x = 2\n"})
    linked = share_packages.share(source, target)
    assert linked == ["nvidia-cudnn-cu13==9.1"]
    assert (target_site / "torch/__init__.py").read_bytes() == b"x = 2\n"
    assert not (target_site / "torch-2.14.1.dist-info").exists()


def test_a_link_that_fails_leaves_nothing_of_that_distribution(venvs, monkeypatch) -> None:
    source, target, source_site, target_site = venvs
    real_link = os.link

    def link(origin, destination):
        if str(origin).endswith("libtorch.so"):
            raise PermissionError(13, "Permission denied")
        real_link(origin, destination)

    monkeypatch.setattr(share_packages.os, "link", link)
    assert share_packages.share(source, target) == ["nvidia-cudnn-cu13==9.1"]
    # no torch files and, above all, no torch metadata: pip installs torch whole
    assert not [p for p in target_site.rglob("*") if p.is_file() and "torch" in str(p)]



def test_a_file_of_the_targets_own_is_kept_and_its_distribution_left_to_pip(venvs) -> None:
    source, target, source_site, target_site = venvs
    own = target_site / "torch/lib/libtorch.so"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"the target's own build")
    assert share_packages.share(source, target) == ["nvidia-cudnn-cu13==9.1"]
    assert own.read_bytes() == b"the target's own build"
    assert not (target_site / "torch/__init__.py").exists()
    assert not (target_site / "torch-2.14.1.dist-info").exists()


def test_another_file_system_links_nothing(venvs, monkeypatch) -> None:
    source, target, _, target_site = venvs

    def link(origin, destination):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(share_packages.os, "link", link)
    assert share_packages.share(source, target) == []
    assert not [p for p in target_site.rglob("*") if p.is_file()]
