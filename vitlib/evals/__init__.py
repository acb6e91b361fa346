"""Evaluators that need only a feature function.

- ``fewshot``: the closed-form ridge probe on frozen features, shots drawn per class
"""
