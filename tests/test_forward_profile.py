"""The forward-pass profile of ``make bench``: XLA ops are attributed to the model's parts by
their Flax scopes, and the script runs (vitlib side; PyTorch is the bench extra)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import forward_profile as fp  # noqa: E402


def test_op_names_map_to_the_parts_of_the_model():
    base = "jit(features)/while/body/closed_call/ViT/"
    block = base + "Transformer/encoderblock_0/"
    cases = {base + "embedding/dot_general": "patch embedding",
             block + "LayerNorm_0/reduce_sum": "LayerNorm",
             base + "Transformer/encoder_norm/rsqrt": "LayerNorm",
             block + "MultiHeadDotProductAttention_0/query/dot_general": "attention projections",
             block + "MultiHeadDotProductAttention_0/out/dot_general": "attention projections",
             block + "MultiHeadDotProductAttention_0/dot_general": "attention scores",
             block + "MultiHeadDotProductAttention_0/softmax/exp": "attention scores",
             block + "MlpBlock_0/Dense_0/dot_general": "MLP",
             base + "add": "other", "jit(features)/while/body/add": "other"}
    for op_name, part in cases.items():
        assert fp.part_of_scope(op_name) == part, op_name
    hlo = ('  %ynn_fusion.3 = f32[32,49,64]{2,1,0} fusion(%p), kind=kCustom, '
           'metadata={op_name="' + block + 'MlpBlock_0/Dense_1/dot_general"}\n'
           '  %while.1 = (s32[]) while(%t), metadata={op_name="jit(features)/while"}\n'
           '  ROOT %copy.2 = f32[4]{0} copy(%x), metadata={op_name="' + base + 'embedding/x"}\n')
    assert fp.hlo_parts(hlo) == {"ynn_fusion.3": "MLP", "copy.2": "patch embedding"}


def test_the_profile_runs_and_gives_every_part_of_vitlib_its_time(tmp_path):
    out = tmp_path / "profile.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "forward_profile.py"),
                          "--no-torch", "--rounds", "1", "--steps", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert len(report["median_img_s"]) == 2 and all(v > 0 for v in report["median_img_s"].values())
    for name, parts in report["profile_ms_per_batch"].items():
        assert set(parts) == set(fp.PARTS)
        # every part of the model that does arithmetic shows up in the trace
        for part in ("patch embedding", "LayerNorm", "attention projections",
                     "attention scores", "MLP"):
            assert parts[part] > 0, (name, part)
    assert "| MLP |" in out.with_suffix(".md").read_text()
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "forward_profile.py"),
                          "--steps", "0"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--steps: must be >= 1, got 0" in bad.stderr
