"""The machinery of the reproduction: what the notebooks call around training.

- ``experiments``: sweeps with a result cache, cooldown branches, runs of many lengths
- ``findings``: checks and claims with their verdicts; ``findings_report``: FINDINGS.md
  (``python -m vitlib.study.findings_report``)
- ``plotting``: the notebooks' figures
- ``results``: where results and cached runs go, figures saved atomically
- ``profiles``: ``smoke`` / ``cpu`` / ``full``
- ``provenance``: the commit and dirtiness of the code that made a result
- ``reproduce``: every notebook with papermill (``python -m vitlib.study.reproduce``)
"""
