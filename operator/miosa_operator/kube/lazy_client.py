"""The ``kubernetes`` package without importing every API and model it has: 34 MB less RSS.

``import kubernetes.client`` executes ``kubernetes/client/__init__.py``, which imports all
~65 API classes and ~770 models (≈ 37 MB of RSS in the operator process: the generated code
and its docstrings); ``kubernetes/__init__.py`` adds the dynamic client, watch, stream and
informer modules.  The operator uses a handful of each, and kopf imports
``kubernetes.client.V1ObjectMeta`` only to recognise such objects.

``install()`` (called by ``miosa-operator run`` before anything imports ``kubernetes``) puts
stand-ins for the packages ``kubernetes``, ``kubernetes.client``, ``kubernetes.client.api``
and ``kubernetes.client.models`` in ``sys.modules``: real packages (their ``__path__``, so
every submodule imports as usual) whose names are resolved on first use from the
``from kubernetes.… import Name`` lines of the real ``__init__.py`` (read, not executed).  The
classes are the real ones, so behaviour is the same; ``ApiClient`` deserialises with
``getattr(kubernetes.client.models, name)``, which loads just that model.  No maintained
library does this for a package one does not own (``importlib.util.LazyLoader`` runs the
whole ``__init__`` at the first attribute access).  ``python -X importtime`` and
``tests/unit/test_lazy_client.py`` show what it loads.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

_IMPORT_LINE = re.compile(r"^from (kubernetes\.[\w.]+) import (\w+)$", re.MULTILINE)
_VERSION = re.compile(r"^__version__ = ['\"]([^'\"]+)['\"]$", re.MULTILINE)
PACKAGES = ("kubernetes", "kubernetes.client", "kubernetes.client.api", "kubernetes.client.models")


class LazyPackage(types.ModuleType):
    """A package whose ``__init__`` is not run: names load from their modules on first use."""

    _lazy_names: dict[str, str]

    def __getattr__(self, attr: str) -> Any:
        where = self.__dict__.get("_lazy_names", {}).get(attr)
        if where is None:  # a submodule (``kubernetes.config``, ``kubernetes.client.rest``), or nothing
            try:
                value = importlib.import_module(f"{self.__name__}.{attr}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{self.__name__}.{attr}":
                    raise
                raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}") from None
        else:
            value = getattr(importlib.import_module(where), attr)
        setattr(self, attr, value)
        return value


def _package(name: str, directory: Path) -> LazyPackage:
    init = directory / "__init__.py"
    module = LazyPackage(name)
    module.__file__ = str(init)
    module.__path__ = [str(directory)]
    module.__package__ = name
    module.__spec__ = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(directory)])
    text = init.read_text()
    module._lazy_names = {attr: where for where, attr in _IMPORT_LINE.findall(text)}
    if version := _VERSION.search(text):
        module.__dict__["__version__"] = version.group(1)
    return module


def install() -> bool:
    """Stand-ins for the four packages; False (and nothing done) once ``kubernetes`` is imported."""
    if any(name in sys.modules for name in PACKAGES):
        return False
    spec = importlib.util.find_spec("kubernetes")  # a top-level package: found, not executed
    if spec is None or spec.origin is None:
        return False
    root = Path(spec.origin).parent
    for name in PACKAGES:
        module = _package(name, root.joinpath(*name.split(".")[1:]))
        sys.modules[name] = module
        parent, _, leaf = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], leaf, module)
    return True
