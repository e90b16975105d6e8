"""`povss teach` as a user types it, on the synthetic-world model and real files: teach my
mug from image:mask files, then correct it with a look-alike's image:mask (--not-shots,
--correct); the store keeps the concept's id and class id and the look-alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from povss_lab.eval.datasets.synper import SynPer
from povss_ros.io import write_png

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "models" / "syn_small.safetensors"


def povss(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "povss_ros.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], str]:
    """Three shots of my mug and one frame with only a look-alike, as PNG files."""
    tmp = tmp_path_factory.mktemp("cli_teach")
    bench = SynPer(0)
    spec = bench.concepts()[0]
    shots = []
    for i, sid in enumerate(spec.positive_ids[:3]):
        sample = bench.sample(sid)
        write_png(tmp / f"shot{i}.png", sample.image)
        write_png(tmp / f"shot{i}_mask.png", np.where(sample.personal_mask, 255, 0)
                  .astype(np.uint8))
        shots.append(f"{tmp / f'shot{i}.png'}:{tmp / f'shot{i}_mask.png'}")
    base_id = bench.vocabulary.index(spec.base_class)
    other = next(s for s in (bench.sample(i) for i in spec.negative_ids)
                 if (s.semantic == base_id).sum() > 400)
    count, parts = cv2.connectedComponents((other.semantic == base_id).astype(np.uint8))
    look_alike = parts == 1 + int(np.bincount(parts.ravel())[1:].argmax())
    write_png(tmp / "other.png", other.image)
    write_png(tmp / "other_mask.png", np.where(look_alike, 255, 0).astype(np.uint8))
    return tmp, shots, f"{tmp / 'other.png'}:{tmp / 'other_mask.png'}"


def test_teach_then_correct_with_a_look_alike(files):
    tmp, shots, other = files
    model = ["--weights", str(SMALL), "--device", "cpu", "--concepts", str(tmp / "store"),
             "--iterations", "10"]
    taught = povss("teach", "my mug", "--base-class", "mug", "--shots", *shots, *model,
                   cwd=tmp)
    assert taught.returncode == 0, taught.stderr
    meta_path = tmp / "store" / "my_mug" / "meta.json"
    first = json.loads(meta_path.read_text())
    assert first["shots"] == 3 and first["negatives"] == 0 and first["concept"]["unique"]

    corrected = povss("teach", "my mug", "--base-class", "mug", "--not-shots", other,
                      "--correct", *model, cwd=tmp)
    assert corrected.returncode == 0, corrected.stderr
    assert "3 shot(s) and 1 look-alike(s)" in corrected.stderr
    meta = json.loads(meta_path.read_text())
    assert (meta["class_id"], meta["concept_id"]) == (first["class_id"], "my_mug")
    assert meta["shots"] == 3 and meta["negatives"] == 1
    assert meta["concept"]["look_alikes"] == 1
    assert sorted(p.name for p in (tmp / "store" / "my_mug" / "negatives").iterdir()) == [
        "000_image.png", "000_mask.png"]


def test_look_alikes_need_their_masks_and_something_to_teach(files):
    tmp, shots, other = files
    no_mask = povss("teach", "my mug", "--base-class", "mug", "--not-shots",
                    other.split(":")[0], "--weights", str(SMALL), cwd=tmp)
    assert no_mask.returncode == 1 and "--not-shots need their masks" in no_mask.stderr
    nothing = povss("teach", "my mug", "--base-class", "mug", "--weights", str(SMALL), cwd=tmp)
    assert nothing.returncode == 1 and "give --shots" in nothing.stderr


def test_teach_again_keeps_the_look_alikes_and_a_correction_needs_something_new(files):
    """`--overwrite` replaces the shots and keeps the stored look-alike; `--correct` alone
    fits only a concept taught for other weights again, so for this one it is refused."""
    tmp, shots, other = files
    model = ["--weights", str(SMALL), "--device", "cpu", "--concepts", str(tmp / "again"),
             "--iterations", "10"]
    taught = povss("teach", "my mug", "--base-class", "mug", "--shots", *shots,
                   "--not-shots", other, *model, cwd=tmp)
    assert taught.returncode == 0, taught.stderr
    meta_path = tmp / "again" / "my_mug" / "meta.json"
    first = json.loads(meta_path.read_text())
    assert (first["shots"], first["negatives"]) == (3, 1)
    again = povss("teach", "my mug", "--base-class", "mug", "--shots", shots[0],
                  "--overwrite", *model, cwd=tmp)
    assert again.returncode == 0, again.stderr
    assert "kept its 1 stored look-alike(s)" in again.stderr
    meta = json.loads(meta_path.read_text())
    assert (meta["shots"], meta["negatives"], meta["class_id"]) == (1, 1, first["class_id"])
    folder = tmp / "again" / "my_mug"
    before = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
              if p.is_file()}
    alone = povss("teach", "my mug", "--base-class", "mug", "--correct", *model, cwd=tmp)
    assert alone.returncode == 1 and "nothing to add" in alone.stderr
    assert before == {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
                      if p.is_file()}
