"""A stand-in package for a module ComfyUI imports at start-up but Z-Image never uses.

comfyfn copies this file as ``<name>/__init__.py`` (``torchvision``, ``torchaudio``) into a
folder it puts on ``PYTHONPATH``. ComfyUI imports both unconditionally (0.3.75:
``comfy/sd.py`` -> ``comfy/ldm/cascade/stage_c_coder.py`` imports torchvision; 0.28 also
imports torchaudio), but only Stable Cascade, Cosmos, ACE and the audio models use them.
The torchvision wheel that matches CPU torch 2.13 is CUDA-linked and no torchaudio build
pairs with it, so neither can be installed on a CPU-only machine.

Behaviour (the package's name is taken from ``__name__``):
* ``import X``, ``import X.a.b``, ``from X import a``, ``from X.a.b import c`` all succeed.
* Any non-dunder attribute is a placeholder; chained attribute access works and only
  *calling* a placeholder raises ``RuntimeError``.
* Dunder names raise ``AttributeError`` (``torch.library`` and ``inspect`` probe things
  like ``__file__``/``__wrapped__``; returning a placeholder there crashes them).
* There is no dist-info, so ``transformers`` and friends treat the module as "not
  installed", which is what we want.
"""

import importlib.abc
import importlib.machinery
import sys
import types

_MESSAGE = "{} is not available: comfyfn stands in for {} (ComfyUI runs without it here)"


def _is_dunder(name):
    return name.startswith("__") and name.endswith("__")


class _Missing:
    """Placeholder for any object of the stood-in package: inert until called."""

    def __init__(self, qualname):
        object.__setattr__(self, "_qualname", qualname)

    def __getattr__(self, name):
        if _is_dunder(name):
            raise AttributeError(name)
        return _Missing(self._qualname + "." + name)

    def __call__(self, *args, **kwargs):
        raise RuntimeError(_MESSAGE.format(self._qualname, __name__))

    def __repr__(self):
        return f"<{__name__} stand-in {self._qualname}>"


class _StandInModule(types.ModuleType):
    """A submodule whose attributes are placeholders."""

    def __getattr__(self, name):
        if _is_dunder(name):
            raise AttributeError(name)
        return _Missing(self.__name__ + "." + name)


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Creates a ``_StandInModule`` for every ``<package>.<anything>`` import."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(__name__ + "."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        return _StandInModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []  # a package, so deeper submodules import too


def __getattr__(name):  # PEP 562: attributes of the top-level package
    if _is_dunder(name):
        raise AttributeError(name)
    return _Missing(__name__ + "." + name)


# One finder per stood-in package (each handles only its own name).
sys.meta_path.insert(0, _StandInFinder())
