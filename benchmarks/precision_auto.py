"""What ``--precision auto`` should mean on a CPU: the image tower timed in fp32 and in bf16 autocast, same run.

    python benchmarks/precision_auto.py                          # demo model and ViT-B-32 (random weights)
    python benchmarks/precision_auto.py --models demo --batches 1,8,32

Prints the CPU's bf16 support (AVX512-BF16 / AMX, as torch reports it), images/s per (model, batch size,
precision), the bf16/fp32 speed ratio, and the largest score change bf16 makes (max |cos fp32 - cos bf16|
between the image features and 10 random unit class vectors). zsclip's "auto" is fp32 on every CPU
(zsclip.precision): the ratio here is what that choice gives up (or gains) on this machine.
"""

from __future__ import annotations

import argparse
import time

import torch

import zsclip
from zsclip.precision import autocast


def cpu_bf16() -> str:
    cpu = getattr(torch, "cpu", None)
    found = [name for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
             if bool(getattr(cpu, name, lambda: False)())]
    return ", ".join(found) or "none (bf16 emulated)"


def images_per_second(encoder, pixels: torch.Tensor, precision: str, repeats: int) -> tuple[float, torch.Tensor]:
    with torch.inference_mode(), autocast(precision, "cpu"):
        encoder._image_forward(pixels)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            features = encoder._image_forward(pixels)
        seconds = time.perf_counter() - start
    return repeats * len(pixels) / seconds, torch.nn.functional.normalize(features.float(), dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo,ViT-B-32")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16: {cpu_bf16()}")
    print(f"{'model':10s} {'batch':>5s} {'fp32 img/s':>11s} {'bf16 img/s':>11s} {'bf16/fp32':>9s} {'max |dcos|':>10s}")
    for name in args.models.split(","):
        encoder = zsclip.load_model(name, pretrained=None if name == "demo" else "random", device="cpu")
        side = encoder.image_size or 224
        generator = torch.Generator().manual_seed(0)
        classes = torch.nn.functional.normalize(torch.randn(10, encoder.embed_dim, generator=generator), dim=-1)
        for batch in (int(b) for b in args.batches.split(",")):
            pixels = torch.randn(batch, 3, side, side, generator=generator)
            fp32, exact = images_per_second(encoder, pixels, "fp32", args.repeats)
            bf16, rounded = images_per_second(encoder, pixels, "bf16", args.repeats)
            change = ((exact - rounded) @ classes.T).abs().max().item()
            print(f"{name:10s} {batch:5d} {fp32:11.1f} {bf16:11.1f} {bf16 / fp32:8.2f}x {change:10.1e}", flush=True)


if __name__ == "__main__":
    main()
