"""Training: ``fit(config, workdir)`` and what it is made of. CLI: ``python -m vitlib.train``.

- ``loop``: ``fit`` (build, start, loop, result), the metrics log, ``NUMERICS_VERSION``
- ``build``: config checks, model, optimizer, data and programs of a run (``build_run``)
- ``resume``: where a run starts (its checkpoint, a branch point, fresh parameters)
- ``evaluation``: accuracy on eval splits and few-shot records during a run
- ``programs``: the jitted init / train / eval / feature functions, compiled once per structure
- ``steps``: losses and the train / eval / feature steps (micro-batched)
- ``sharding``: the device mesh, batch and FSDP state shardings
- ``checkpoints``: orbax checkpoints written atomically
- ``workdir_lock``: one process writes a workdir at a time
- ``compile_cache``: JAX's persistent compilation cache
- ``finetune``: fine-tuning a trained run on another dataset (``python -m vitlib.train.finetune``)
- ``cli``: ``python -m vitlib.train``
"""
from vitlib.train.loop import NUMERICS_VERSION, NonFiniteLossError, fit

__all__ = ["NUMERICS_VERSION", "NonFiniteLossError", "fit"]
