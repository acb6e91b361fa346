"""Data: offline datasets and the in-memory input pipeline.

- ``datasets``: TF-free TFDS builders of Fashion-MNIST and digits (array_record), ``load_split``
- ``batches``: batches as a pure function of (seed, step), nested subsets, eval batches, prefetch
- ``augment``: preprocessing to [-1, 1] and pad-and-crop / flip augmentation
"""
