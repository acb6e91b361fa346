"""Tools that analyse models without training them to the end.

- ``state_memory``: parameter and optimizer-state bytes from shapes
- ``step_memory``: the compiled step's per-device memory plan, FLOPs and temporaries, activation
  memory, measured step growth
- ``memory``: their CLI (``python -m vitlib.analysis.memory``)
- ``fit_map``: which shapes fit a memory budget under the paper's settings (cached plans)
- ``scaling``: saturating power-law fits on the Pareto frontier, bootstrap, extrapolation
- ``paper_tables``: the paper's Appendix F / G tables (``paper_data/``)
- ``accelerators``: peak bf16 FLOP/s and memory of named accelerators; budgets in device-days
  (e.g. TPUv3 core-days, H100-days) as FLOPs at an assumed MFU
- ``compute_plan``: FLOPs, device-hours and step memory of planned runs, before anything trains
- ``advice``: which model and how many images for a compute budget, from the paper's runs or
  your own (``python -m vitlib.analysis.advice``)
"""
