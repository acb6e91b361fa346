"""``import timm`` beside the CPU torch wheel: a torchvision whose C ops did not load.

timm imports torchvision (``torchvision.ops.misc``, its transforms) but none of its C ops. The
only torchvision wheels on PyPI for x86-64 Linux are CUDA builds; beside the CPU torch wheel
(pinned in requirements.lock, 0.75 GB instead of 5.5 GB for the CUDA pair) their C extension
does not load, which torchvision tolerates, but ``torchvision/_meta_registrations.py`` then
registers fake kernels for ops that were never defined and ``import torchvision`` fails with
``RuntimeError: operator torchvision::nms does not exist``.

``install()`` puts a finder on ``sys.meta_path`` that, when and only when torchvision's C
extension failed to load, gives ``torchvision._meta_registrations`` as an empty module (there is
nothing to register fake kernels for). Everything else imports unchanged. ``make install`` runs
``python -m vitlib.torchvision_cpu``, which writes ``vitlib-torchvision-cpu.pth`` into the
environment's site-packages so that a plain ``import timm`` works in any ``.venv`` python; run
it yourself after installing vitlib some other way. This module imports nothing but the
standard library (the ``.pth`` runs it at every interpreter start).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

PTH_NAME = "vitlib-torchvision-cpu.pth"
_TARGET = "torchvision._meta_registrations"


class _EmptyModule(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__doc__ = "skipped by vitlib.torchvision_cpu: torchvision's C ops did not load"


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        extension = sys.modules.get("torchvision.extension")
        if extension is None or extension._has_ops():
            return None  # the C ops loaded: the real registrations apply
        return importlib.machinery.ModuleSpec(name, _EmptyModule())


def install() -> None:
    """Idempotent; a no-op for a torchvision whose C ops load."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def write_pth(site_packages=None):
    """Writes the ``.pth`` that calls ``install()`` at interpreter start; returns its path. It
    does nothing once vitlib is uninstalled."""
    import sysconfig
    from pathlib import Path

    folder = Path(site_packages or sysconfig.get_paths()["purelib"])
    path = folder / PTH_NAME
    path.write_text("import sys; exec('try:\\n import vitlib.torchvision_cpu as m; m.install()"
                    "\\nexcept ImportError:\\n pass')\n")
    return path


if __name__ == "__main__":
    print(f"wrote {write_pth()}")
