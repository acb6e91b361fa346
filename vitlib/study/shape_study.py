"""The shape study's models (notebook 06, the paper's Sec. 3.6): a centre shape, its halvings,
and scale-ups of about twice its FLOPs per image along one dimension or all together."""
from __future__ import annotations

SCALE_UPS = ("depth x2", "width x1.5", "mlp x2.5")  # one dimension each, ~2x the FLOPs


def shaped(width: int, depth: int, mlp_dim: int) -> dict:
    """A shape with heads of 32 channels where the width allows, else of 16."""
    return {"width": width, "depth": depth, "mlp_dim": mlp_dim,
            "num_heads": width // 32 if width % 32 == 0 else max(1, width // 16)}


def _scale(n: int, factor: float, step: int = 1) -> int:
    return max(step, int(round(n * factor / step)) * step)


def shape_variants(centre: dict, which="all") -> dict:
    """{name: shape} around ``centre`` (width, depth, mlp_dim); ``which``: 'all' or a list of
    the names to keep (``centre``, ``depth x0.5`` ... ``all x1.25``)."""
    w, d, m = centre["width"], centre["depth"], centre["mlp_dim"]
    variants = {"centre": shaped(w, d, m),
                "depth x0.5": shaped(w, _scale(d, 0.5), m),
                "width x0.5": shaped(_scale(w, 0.5, 16), d, m),
                "mlp x0.5": shaped(w, d, _scale(m, 0.5)),
                "all x0.5": shaped(_scale(w, 0.5, 16), _scale(d, 0.5), _scale(m, 0.5)),
                "depth x2": shaped(w, _scale(d, 2), m),
                "width x1.5": shaped(_scale(w, 1.5, 16), d, m),
                "mlp x2.5": shaped(w, d, _scale(m, 2.5)),
                "all x1.25": shaped(_scale(w, 1.25, 16), _scale(d, 1.25), _scale(m, 1.25))}
    if which == "all":
        return variants
    unknown = sorted(set(which) - set(variants))
    if unknown:
        raise ValueError(f"shapes: {unknown} are not allowed; choose from {list(variants)}")
    return {k: v for k, v in variants.items() if k in which}


def equal_compute_steps(centre_steps: int, centre_flops: float, flops: float, batch: int) -> int:
    """Steps giving a model of ``flops`` per image (forward) the training FLOPs of
    ``centre_steps`` steps of the centre at ``batch`` (at least 10)."""
    budget = 3 * centre_flops * batch * centre_steps
    return max(10, int(round(budget / (3 * flops * batch))))
