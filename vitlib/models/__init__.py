"""The ViT model, its named variants and closed-form counts.

- ``vit``: the Flax ViT (patch embedding, position embeddings, scanned / remat encoder, tok /
  gap / map pooling, zero-initialised head)
- ``variants``: ``ViTConfig``, the paper's and the CPU-sized shapes, ``NAME/PATCH`` parsing,
  the sequence padding rule
- ``counting``: closed-form parameter, FLOP and token counts (Table 2's convention)
- ``params``: scanned <-> unrolled parameter trees
- ``zoo``: ``python -m vitlib.models.zoo``, Table 2 as computed here
"""
from vitlib.models.counting import (count_flops, count_params, num_patches, sequence_length,
                                    xla_forward_flops)
from vitlib.models.params import scanned_to_unrolled, unrolled_to_scanned
from vitlib.models.variants import (CPU_SHAPES, POOL_TYPES, POSEMB_TYPES, REMAT_POLICIES, SHAPES,
                                    ViTConfig, padded_length, parse_variant, table2_variants,
                                    vit_config)
from vitlib.models.vit import ViT, posemb_sincos2d


def create_vit(variant=None, **overrides) -> ViT:
    """A validated ``ViT`` module: ``create_vit("B/16", num_classes=1000, pool_type="map")``."""
    return ViT(vit_config(variant, **overrides))


__all__ = [
    "CPU_SHAPES", "POOL_TYPES", "POSEMB_TYPES", "REMAT_POLICIES", "SHAPES", "ViT", "ViTConfig",
    "count_flops", "count_params", "create_vit", "num_patches", "padded_length", "parse_variant",
    "posemb_sincos2d", "scanned_to_unrolled", "sequence_length", "table2_variants",
    "unrolled_to_scanned", "vit_config", "xla_forward_flops",
]
