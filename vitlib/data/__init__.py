"""Data: offline datasets, JPEG datasets in TFDS array_record format, and the two input
pipelines (in-memory for small datasets, grain for encoded images).

- ``datasets``: TF-free TFDS builders of Fashion-MNIST and digits (array_record), ``load_split``
- ``batches``: batches as a pure function of (seed, step), nested subsets, eval batches,
  prefetch, ``MemoryInput`` (the in-memory pipeline)
- ``augment``: preprocessing to [-1, 1] and pad-and-crop / flip augmentation (in memory)
- ``sources``: ``open_source(name, split)``, random access to a TFDS dataset's encoded images
- ``prepare``: image folder / list files -> array_record TFDS dataset
  (``python -m vitlib.data.prepare``)
- ``image_ops``: big_vision's decode, inception crop, flip, resize and central crop, no TF
- ``grain_pipeline``: the JPEG training input on grain (``GrainInput``) and its eval batches
"""
