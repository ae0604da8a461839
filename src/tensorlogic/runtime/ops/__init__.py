"""MIL op implementations, one module per coremltools op family (activation.py, conv.py, ...).

Importing this package imports every family module, which registers its ops.
"""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
