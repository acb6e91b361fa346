"""Training and feature-extraction throughput: vitlib's real train step vs a PyTorch eager ViT of
the same shapes, on this machine's CPU cores. ``make bench`` runs it.

Configs (28x28x1 images, patch 4 -> 49 tokens, GAP, 10 classes, batch 256):
  C1: width 64, depth 4, heads 2, MLP 256
  C2: width 192, depth 6, heads 3, MLP 768

After a warm-up, vitlib and PyTorch alternate for several rounds in one process; the report
gives median images/s of each, their ratio, vitlib's achieved GFLOP/s (XLA cost analysis of the
compiled step) and its fraction of the f32 matmul peak measured in the same run.
Results: results/benchmarks/cpu_train.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vitlib.files import write_json
from vitlib.models import ViT, count_flops, vit_config
from vitlib.optim.chain import make_optimizer
from vitlib.train.steps import init_state, make_feature_fn, make_train_step, micro_batches_for

sys.path.insert(0, str(Path(__file__).parent))
from torch_vit import TorchViT  # noqa: E402

CONFIGS = {
    "C1": dict(width=64, depth=4, num_heads=2, mlp_dim=256),
    "C2": dict(width=192, depth=6, num_heads=3, mlp_dim=768),
}
BATCH, IMAGE, PATCH, CLASSES = 256, 28, 4, 10
# The optimizer chain fit() uses by default (vitlib/configs/base.py).
OPTIM = dict(optimizer="adam", lr=1e-3, total_steps=10_000, grad_clip_norm=1.0,
             schedule=dict(kind="cosine", warmup_steps=100), weight_decay=[(".*", 1e-4)])


def _timed(fn, steps: int) -> float:
    start = time.perf_counter()
    fn(steps)
    return steps * BATCH / (time.perf_counter() - start)


def matmul_peak_gflops(n: int = 2048, reps: int = 10) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(reps):
        out = f(a)
    out.block_until_ready()
    return reps * 2 * n ** 3 / (time.perf_counter() - start) / 1e9


def vitlib_runners(shape: dict, rng: np.random.Generator):
    cfg = vit_config(**shape, patch_size=PATCH, image_size=IMAGE, num_classes=CLASSES)
    model = ViT(cfg)
    tx = make_optimizer(OPTIM)
    state = init_state(model, tx, (IMAGE, IMAGE, 1), 0)
    batch = {"image": jnp.asarray(rng.uniform(-1, 1, (BATCH, IMAGE, IMAGE, 1)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, CLASSES, BATCH), jnp.int32)}
    micro = micro_batches_for(BATCH, 0, jax.device_count())  # what fit() runs by default
    step = jax.jit(make_train_step(model, tx, "softmax", micro), donate_argnums=0)
    compiled = step.lower(state, batch).compile()
    # XLA's cost analysis counts a loop body once, so the FLOPs come from the unsplit step.
    whole = jax.jit(make_train_step(model, tx, "softmax")).lower(state, batch).compile()
    cost = whole.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    features = jax.jit(make_feature_fn(model, micro))
    holder = {"state": state}

    def train(steps):
        s = holder["state"]
        for _ in range(steps):
            s, metrics = compiled(s, batch)
        jax.block_until_ready(metrics)
        holder["state"] = s

    def forward(steps):
        for _ in range(steps):
            out = features(holder["state"].params, batch["image"])
        out.block_until_ready()

    return train, forward, float(cost["flops"]), count_flops(cfg, in_channels=1), micro


def torch_runners(shape: dict, rng: np.random.Generator, micro_batches: int):
    import torch

    model = TorchViT(shape["width"], shape["depth"], shape["num_heads"], shape["mlp_dim"],
                     PATCH, IMAGE, 1, CLASSES)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.tensor(rng.uniform(-1, 1, (BATCH, 1, IMAGE, IMAGE)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, CLASSES, BATCH))
    loss_fn = torch.nn.CrossEntropyLoss()

    def train(steps):
        model.train()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(images), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    def train_micro(steps, k=micro_batches):
        # The same 32-example gradient accumulation vitlib runs, for an equal-footing reference.
        model.train()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            for chunk_x, chunk_y in zip(images.chunk(k), labels.chunk(k)):
                (loss_fn(model(chunk_x), chunk_y) / k).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    def forward(steps):
        model.eval()
        with torch.no_grad():
            for _ in range(steps):
                model.features(images)

    return train, train_micro, forward


def run(rounds: int, steps: int, out: Path) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    peak = matmul_peak_gflops()
    report = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "jax": jax.__version__, "torch": torch.__version__, "batch": BATCH,
              "rounds": rounds, "steps_per_round": steps, "matmul_peak_gflops": peak,
              "configs": {}}
    for name, shape in CONFIGS.items():
        v_train, v_fwd, step_flops, fwd_flops, micro = vitlib_runners(shape, rng)
        t_train, t_micro, t_fwd = torch_runners(shape, rng, micro)
        for fn in (v_train, t_train, t_micro, v_fwd, t_fwd):  # warm-up
            fn(3)
        samples = {k: [] for k in ("vitlib_train", "torch_train", "torch_train_micro",
                                   "vitlib_fwd", "torch_fwd")}
        for _ in range(rounds):  # alternate A/B so drift hits both alike
            samples["vitlib_train"].append(_timed(v_train, steps))
            samples["torch_train"].append(_timed(t_train, steps))
            samples["torch_train_micro"].append(_timed(t_micro, steps))
            samples["vitlib_fwd"].append(_timed(v_fwd, steps))
            samples["torch_fwd"].append(_timed(t_fwd, steps))
        med = {k: statistics.median(v) for k, v in samples.items()}
        gflops = step_flops * med["vitlib_train"] / BATCH / 1e9
        report["configs"][name] = {
            **shape, "vitlib_micro_batches": micro, "median_img_s": med, "samples_img_s": samples,
            "train_ratio": med["vitlib_train"] / med["torch_train"],
            "train_ratio_vs_torch_micro": med["vitlib_train"] / med["torch_train_micro"],
            "forward_ratio": med["vitlib_fwd"] / med["torch_fwd"],
            "xla_step_gflop": step_flops / 1e9, "model_fwd_gflop_per_image": fwd_flops / 1e9,
            "vitlib_train_gflops": gflops, "fraction_of_matmul_peak": gflops / peak}
        print(f"{name}: train vitlib {med['vitlib_train']:.0f} img/s vs torch "
              f"{med['torch_train']:.0f} ({med['vitlib_train'] / med['torch_train']:.2f}x; torch "
              f"with vitlib's {micro} micro-batches {med['torch_train_micro']:.0f}); "
              f"forward {med['vitlib_fwd']:.0f} vs {med['torch_fwd']:.0f} "
              f"({med['vitlib_fwd'] / med['torch_fwd']:.2f}x); {gflops:.0f} GFLOP/s = "
              f"{100 * gflops / peak:.0f}% of {peak:.0f}", flush=True)
    write_json(out, report)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per round and framework")
    parser.add_argument("--out", default="results/benchmarks/cpu_train.json")
    args = parser.parse_args(argv)
    run(args.rounds, args.steps, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
