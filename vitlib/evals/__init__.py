"""Evaluators that need only a feature function.

- ``fewshot``: the closed-form ridge probe on frozen features, shots drawn per class; l2 by
  leave-one-shot-out (``l2_mode="loso"``) or big_vision's fixed-l2 probe (``"fixed"``)
- ``suite``: the paper's few-shot suite (ImageNet, CIFAR-100, Pets, Birds) on JPEG datasets:
  suite specs, features of a split in per-process batches, the flat record
"""
