"""Optimizer-state accounting against the formula of each optimizer's state."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from vitlib.analysis.state_memory import optimizer_memory, param_shapes


def _formula_bytes(variant, optimizer):
    """State bytes from each optimizer's definition, leaf by leaf (count scalars aside)."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(param_shapes(variant)):
        size = int(np.prod(leaf.shape))
        dims = sorted(leaf.shape)
        if optimizer == "adam":
            total += 2 * 4 * size  # fp32 first and second moments
        elif optimizer == "adam_hp":
            total += 2 * size + 4 * size  # bf16 first moment, fp32 second moment
        elif optimizer == "adafactor_bv":
            total += 2 * size  # bf16 momentum
            if len(dims) >= 2 and dims[-2] >= 32:  # factored: fp32 row + column statistics
                total += 4 * (size // dims[-1] + size // dims[-2])
            else:
                total += 4 * size
    return total


@pytest.mark.parametrize("variant", ["Ti/16", "B/32", "L/16", "G/14"])
@pytest.mark.parametrize("optimizer, ratio", [("adam", 2.0), ("adam_hp", 1.5),
                                              ("adafactor_bv", 0.5)])
def test_state_bytes_match_the_formula(variant, optimizer, ratio):
    report = optimizer_memory(variant, optimizer)
    num_params = sum(int(np.prod(p.shape)) for p in
                     jax.tree_util.tree_leaves(param_shapes(variant)))
    assert report["param_bytes"] == 4 * num_params
    count_bytes = report["opt_state_bytes_by_dtype"].get("int32", 0)
    assert 0 < count_bytes <= 16
    assert report["opt_state_bytes"] - count_bytes == _formula_bytes(variant, optimizer)
    # "about 0.5x" for adafactor_bv: small models carry relatively more unfactored vectors.
    assert report["opt_state_over_params"] == pytest.approx(ratio, abs=0.05)


def test_g14_memory_matches_the_paper():
    adam = optimizer_memory("G/14", "adam")
    assert adam["param_bytes"] / 1e9 == pytest.approx(7.4, abs=0.05)  # "~7.4 GB in fp32"
    hp = optimizer_memory("G/14", "adam_hp")
    assert hp["opt_state_bytes_by_dtype"]["bfloat16"] == adam["param_bytes"] // 2
    stock = optimizer_memory("G/14", "adafactor")
    assert stock["opt_state_over_params"] < 0.5  # no momentum; factored where dims >= 128


def test_cli_json_and_errors():
    out = subprocess.run([sys.executable, "-m", "vitlib.analysis.memory", "--variant", "B/16",
                          "--optimizer", "adam_hp", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["opt_state_bytes"] / report["param_bytes"] == pytest.approx(1.5, abs=1e-3)
    bad = subprocess.run([sys.executable, "-m", "vitlib.analysis.memory", "--variant", "B16",
                          "--optimizer", "adam"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "variant" in bad.stderr and "Traceback" not in bad.stderr


def test_compiled_plan_of_the_real_train_step_on_virtual_devices():
    from vitlib.analysis.state_memory import optimizer_memory
    from vitlib.analysis.step_memory import plan_in_subprocess
    replicated = plan_in_subprocess("Pico/4", "adam", batch_per_device=4, devices=2,
                                    image_size=32)
    sharded = plan_in_subprocess("Pico/4", "adam", batch_per_device=4, devices=2,
                                 image_size=32, fsdp=True)
    for plan in (replicated, sharded):
        assert plan["total_bytes"] == (plan["argument_bytes"] + plan["output_bytes"]
                                       - plan["alias_bytes"] + plan["temp_bytes"])
        assert plan["alias_bytes"] > 0  # the donated state is updated in place
    # Arguments hold params + optimizer state (+ the batch); FSDP halves the state per device.
    state = optimizer_memory("Pico/4", "adam", image_size=32, num_classes=1000)
    state_bytes = state["param_bytes"] + state["opt_state_bytes"]
    assert replicated["argument_bytes"] >= state_bytes
    assert sharded["argument_bytes"] < 0.75 * replicated["argument_bytes"]


def test_planner_matches_the_measured_peak_of_the_real_step():
    """Run the planned S/16 step for real (fresh process) and compare peak RSS growth."""
    code = ("import json; from vitlib.analysis.step_memory import measured_step_growth; "
            "print(json.dumps(measured_step_growth('S/16', 'adam', 8)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["predicted_step_bytes"] > 500 * 2 ** 20  # large enough to dominate noise
    assert abs(report["relative_error"]) < 0.10, report


def test_plans_skip_llvm_optimisation_without_changing_the_memory_numbers():
    """PLAN_COMPILER_OPTIONS only speeds up compiling: XLA's memory analysis is the same as
    with the default compiler options."""
    from vitlib.analysis import step_memory as memory

    step, make_state, shardings, mesh, hyper = memory._train_step(
        "Pico/8", "adafactor_bv", 1, False, True, 64, 10, "float32", True, "nothing_saveable")
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        jax.eval_shape(make_state), shardings)
    lowered = step.lower(abstract, memory._batch(4, 64, mesh, concrete=False), hyper)
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
              "temp_size_in_bytes")
    default = lowered.compile().memory_analysis()
    fast = lowered.compile(memory.PLAN_COMPILER_OPTIONS).memory_analysis()
    assert [getattr(fast, f) for f in fields] == [getattr(default, f) for f in fields]
