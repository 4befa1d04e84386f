"""Stand-in for ``torchvision`` so ComfyUI can start without it.

ComfyUI 0.3.75 imports torchvision unconditionally (``comfy/sd.py`` ->
``comfy/ldm/cascade/stage_c_coder.py``), but only Stable Cascade, Cosmos and
ACE actually *use* it.  The torchvision wheel that matches our torch build is
CUDA-linked and cannot be imported on a CPU-only machine, so we put this
directory's parent on ``PYTHONPATH`` instead.

Behaviour:
* ``import torchvision``, ``import torchvision.transforms``,
  ``from torchvision import transforms``, ``from torchvision.x.y import z``
  all succeed.
* Any non-dunder attribute is a placeholder; chained attribute access works
  and only *calling* a placeholder raises ``RuntimeError``.
* Dunder names raise ``AttributeError`` (``torch.library`` and ``inspect``
  probe things like ``__file__``/``__wrapped__``; returning a placeholder
  there crashes them).
* There is no dist-info, so ``transformers`` and friends treat torchvision as
  "not installed", which is what we want.
"""

import importlib.abc
import importlib.machinery
import sys
import types

_MESSAGE = (
    "{} is not available: torchvision is replaced by a stub "
    "(comfyfn runs ComfyUI without torchvision)"
)


def _is_dunder(name):
    return name.startswith("__") and name.endswith("__")


class _Missing:
    """Placeholder for any torchvision object: inert until called."""

    def __init__(self, qualname):
        object.__setattr__(self, "_qualname", qualname)

    def __getattr__(self, name):
        if _is_dunder(name):
            raise AttributeError(name)
        return _Missing(self._qualname + "." + name)

    def __call__(self, *args, **kwargs):
        raise RuntimeError(_MESSAGE.format(self._qualname))

    def __repr__(self):
        return f"<torchvision stub {self._qualname}>"


class _StubModule(types.ModuleType):
    """A ``torchvision.*`` submodule whose attributes are placeholders."""

    def __getattr__(self, name):
        if _is_dunder(name):
            raise AttributeError(name)
        return _Missing(self.__name__ + "." + name)


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Creates a ``_StubModule`` for every ``torchvision.<anything>`` import."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(__name__ + "."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []  # a package, so deeper submodules import too


def __getattr__(name):  # PEP 562: attributes of the top-level package
    if _is_dunder(name):
        raise AttributeError(name)
    return _Missing(__name__ + "." + name)


if not any(isinstance(f, _StubFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _StubFinder())
