"""The fit map's planning grid: shapes by rule, cached plans in worker processes, FLOPs of the
step extrapolated over depth against a direct compile and the analytic count."""
import jax
import pytest

from vitlib.analysis import fit_map
from vitlib.analysis.step_memory import (PLAN_COMPILER_OPTIONS, _batch, _train_step, compiled_plan,
                                         step_flops)
from vitlib.models import count_flops, vit_config

TINY = dict(image_size=28, num_classes=10)


def test_shapes_follow_the_rule_and_the_paper_rows():
    grid = fit_map.shape_grid([4, 8], [128, 192])
    assert [(s["depth"], s["width"], s["num_heads"], s["mlp_dim"]) for s in grid] == [
        (4, 128, 2, 512), (4, 192, 3, 768), (8, 128, 2, 512), (8, 192, 3, 768)]
    g = fit_map.paper_shapes(["G/14"])[0]
    assert (g["width"], g["depth"], g["mlp_dim"], g["num_heads"]) == (1664, 48, 8192, 16)
    with pytest.raises(ValueError, match="width"):
        fit_map.shape(100, 4)
    with pytest.raises(ValueError, match="names"):
        fit_map.paper_shapes(["X/14"])


def test_step_flops_extrapolate_exactly_and_match_the_analytic_count():
    model = {"width": 64, "depth": 3, "mlp_dim": 256, "num_heads": 2, "patch_size": 7}
    counted = step_flops(None, "adam", 4, **TINY, model=model)
    # The unrolled depth-3 step compiled directly: extrapolation from depths 1 and 2 is exact.
    step, make_state, _, mesh, hyper = _train_step(None, "adam", 1, False, False, 28, 10,
                                                   "float32", False, "nothing_saveable", model)
    cost = step.lower(jax.eval_shape(make_state), _batch(4, 28, mesh, False), hyper).compile(
        PLAN_COMPILER_OPTIONS).cost_analysis()
    direct = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
    assert counted["step_flops"] == pytest.approx(direct, rel=1e-6)  # up to scalar bookkeeping
    # Training is ~3 forward passes (forward, two backward matmuls); XLA adds element-wise work.
    forward = count_flops(vit_config(**model, image_size=28, num_classes=10), in_channels=3)
    assert 3.0 <= counted["step_flops"] / (4 * forward) <= 3.6


def test_plan_fit_map_plans_each_cell_once_and_reads_back(tmp_path, monkeypatch):
    shapes = fit_map.shape_grid([2], [64], patch_size=7)
    settings = {"tok + adam": {"pool_type": "tok", "optimizer": "adam"},
                "map + adafactor": {"pool_type": "map", "optimizer": "adafactor_bv"}}
    rows = fit_map.plan_fit_map(shapes, tmp_path, settings, batch_per_device=4, image_size=28,
                                num_classes=10, pad_tokens_to=32, core_gib=1e-4,
                                per_process=8, progress=False)
    assert len(rows) == 4 and len(list(tmp_path.glob("*.json"))) == 8
    by = {(r["setting"], r["remat"]): r for r in rows}
    # Against a direct plan in this process: the class token padded from 17 to 32 tokens.
    direct = compiled_plan(None, "adam", 4, 1, remat=True, **TINY, model={
        **{k: shapes[0][k] for k in ("width", "depth", "mlp_dim", "num_heads", "patch_size")},
        "pool_type": "tok", "pad_tokens_to": 32})
    assert by["tok + adam", True]["total_gib"] * 2 ** 30 == direct["total_bytes"]
    assert by["tok + adam", False]["total_gib"] > by["map + adafactor", False]["total_gib"]
    assert not any(r["fits"] for r in rows)  # 1e-4 GiB: nothing fits
    flops = {r["remat"]: r["train_flops_per_image"] for r in rows if r["optimizer"] == "adam"}
    assert flops[True] > flops[False]  # remat recomputes the forward pass

    def refuse(*args):
        raise AssertionError("a cached plan was compiled again")
    monkeypatch.setattr(fit_map, "_run_in_process", refuse)
    again = fit_map.plan_fit_map(shapes, tmp_path, settings, batch_per_device=4, image_size=28,
                                 num_classes=10, pad_tokens_to=32, core_gib=1e-4,
                                 progress=False)
    assert again == rows
    first = fit_map.first_fitting_setting(
        [{**r, "fits": r["setting"] == "map + adafactor"} for r in rows], settings, remat=True)
    assert first == {shapes[0]["name"]: 1}
    with pytest.raises(ValueError, match="settings"):
        fit_map.plan_fit_map(shapes, tmp_path, {"x": {"optimizer": "adam"}}, progress=False)


def test_temporaries_breakdown_names_the_gradient_tree():
    from vitlib.analysis.step_memory import temporaries_breakdown
    from vitlib.models import count_params

    report = temporaries_breakdown("Ti/16", "adafactor_bv", 4, remat=True, image_size=64)
    expected = 4 * count_params(vit_config("Ti/16", image_size=64, num_classes=1000)) / 2 ** 30
    assert report["param_gib"] == pytest.approx(expected, rel=1e-9)
    rows = {r["program"]: r for r in report["rows"]}
    assert rows["loss and gradients"]["output_gib"] == pytest.approx(expected, rel=1e-3)
    assert report["accounted"]  # SGD step temporaries = backward working set + gradients
    assert [r["program"] for r in report["rows"]][-2:] == [
        "train step (adafactor_bv)", "train step, bfloat16 params (adafactor_bv)"]
    assert "GiB" in report["explanation"]


def _plan(name, setting, total, argument, remat=True):
    return {"name": name, "setting": setting, "remat": remat, "total_gib": total,
            "argument_gib": argument, "temp_gib": total - argument}


def test_fits_are_counted_per_setting_and_undecided_shapes_are_left_out():
    from vitlib.analysis.fit_map import fits_per_setting

    order = ["weak", "middle", "strong"]
    rows = [
        # fits only with the strongest saving, every verdict decided (arguments > 16 or fits)
        *[_plan("a", s, t, g) for s, t, g in (("weak", 30, 17), ("middle", 25, 16.5),
                                              ("strong", 15, 8))],
        # fits with the weak setting but not the middle one: a cumulative count would hide it
        *[_plan("b", s, t, g) for s, t, g in (("weak", 15, 5), ("middle", 20, 17),
                                              ("strong", 14, 4))],
        # plans 20 GiB with 10 GiB of arguments under 'middle': decided by buffer assignment
        *[_plan("c", s, t, g) for s, t, g in (("weak", 30, 17), ("middle", 20, 10),
                                              ("strong", 12, 6))],
        _plan("d", "weak", 1, 1, remat=False),  # another remat: ignored
    ]
    out = fits_per_setting(rows, order, remat=True, core_gib=16)
    assert out["undecided"] == ["c"] and out["decided"] == ["a", "b"]
    assert out["counts"] == {"weak": 1, "middle": 0, "strong": 2}  # not 1, 1, 2 cumulatively
    # A measured, tighter lower bound decides c's middle plan (cannot fit even so).
    tight = fits_per_setting(rows, order, True, 16, lower_bounds={("c", "middle"): 16.5})
    assert tight["undecided"] == [] and tight["counts"] == {"weak": 1, "middle": 0, "strong": 3}
    with pytest.raises(ValueError, match=r"rows: shapes \['e'\] lack a plan"):
        fits_per_setting(rows + [_plan("e", "weak", 1, 1)], order, True, 16)


def test_a_stronger_saving_that_plans_more_memory_is_flagged_with_its_cause():
    from vitlib.analysis.fit_map import saving_reversals

    rows = [_plan("x", "weak", 70, 20), _plan("x", "middle", 62.38, 15),
            _plan("x", "strong", 62.62, 9), _plan("y", "weak", 10, 5), _plan("y", "middle", 9, 4),
            _plan("y", "strong", 8, 3)]
    flagged = saving_reversals(rows, ["weak", "middle", "strong"])
    assert [(f["name"], f["weaker"], f["stronger"]) for f in flagged] == [("x", "middle", "strong")]
    assert flagged[0]["argument_gib"] == (15, 9) and flagged[0]["temp_gib"][1] > flagged[0]["temp_gib"][0]
