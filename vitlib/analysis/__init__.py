"""Tools that analyse models without training them to the end.

- ``memory``: optimizer state, the compiled step's per-device memory plan
  (``python -m vitlib.analysis.memory``), activation memory, measured step growth
- ``fit_map``: which shapes fit a memory budget under the paper's settings (cached plans)
- ``scaling``: saturating power-law fits on the Pareto frontier, bootstrap, extrapolation
- ``paper_tables``: the paper's Appendix F / G tables (``paper_data/``)
"""
