"""The model registry: detectors by name, so that run configs, checkpoints and commands build any of them.

A builder is registered under a name with :func:`register_model` and built with :func:`build_model`::

    @register_model("my_detector")
    def my_detector(num_classes: int, **options) -> nn.Module: ...

    model = build_model("my_detector", num_classes=4, backbone="resnet_tiny")

The contract a registered detector keeps, so that :mod:`sodlib.engine` trains and evaluates it unchanged
(torchvision's detection API):

- the builder takes ``num_classes`` (object categories **plus one** for the background) and keyword options;
- in train mode ``model(images, targets)``, with ``images`` a list of ``Tensor[3, H, W]`` in ``[0, 1]`` and
  torchvision target dicts (``boxes Tensor[N, 4]`` xyxy pixels, ``labels Tensor[N]`` in ``1..C``), returns a
  dict of scalar losses, summed by the training loop;
- in eval mode ``model(images)`` returns per image ``{"boxes": Tensor[D, 4], "labels": Tensor[D],
  "scores": Tensor[D]}`` in the input image's pixels.

:func:`build_model` records how the model was built in ``model.build_options`` (``{"name": ..., options}``),
which checkpoints store, so that :func:`rebuild_model` makes the same model again from a checkpoint alone.
A builder may set ``build_options`` itself (to store normalised options); the registry then adds the name.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from torch import nn

from sodlib.checks import refuse_unknown_names

__all__ = ["DEFAULT_MODEL", "register_model", "build_model", "list_models", "model_builder", "rebuild_model",
           "model_option_names", "check_model_options"]

#: The model of a run config whose ``[model]`` table names none (so configs written before the registry work).
DEFAULT_MODEL = "faster_rcnn"

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

# name -> (builder, the option names its **kwargs pass on, or None for any)
_BUILDERS: dict[str, tuple[Callable[..., nn.Module], frozenset[str] | None]] = {}


def register_model(name: str, *, extra_options: Iterable[str] | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(num_classes, **options) -> nn.Module`` under ``name``.

    The options a builder takes are its named parameters; a builder with ``**kwargs`` that passes them on
    (to torchvision, say) lists the names it passes in ``extra_options``, so that a misspelt option is refused
    (:func:`check_model_options`) instead of being swallowed. A builder with ``**kwargs`` and no
    ``extra_options`` takes any option. A name is registered once; another builder under a taken name is refused.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"model name {name!r} must be an identifier such as 'faster_rcnn'")

    def decorate(builder: Builder) -> Builder:
        taken = _BUILDERS.get(name, (builder, None))[0]
        if taken is not builder:
            raise ValueError(f"model name {name!r} is registered already (by {taken.__module__}.{taken.__qualname__}); "
                             "fix: choose another name")
        _BUILDERS[name] = (builder, frozenset(extra_options) if extra_options is not None else None)
        return builder

    return decorate


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_BUILDERS)


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered under ``name``; an unknown name is an error that lists the registered ones."""
    if name not in _BUILDERS:
        raise ValueError(f"model {name!r} is not registered; registered models: {', '.join(list_models())} "
                         "(fix: [model] name = one of these, or register yours with sodlib.models.register_model)")
    return _BUILDERS[name][0]


def model_option_names(name: str) -> tuple[list[str], bool]:
    """The options model ``name`` takes, sorted, and whether it takes any others as well (a builder with
    ``**kwargs`` and no ``extra_options``)."""
    parameters = inspect.signature(model_builder(name)).parameters.values()
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in parameters)
    extra = _BUILDERS[name][1]
    return sorted(names | set(extra or ())), takes_kwargs and extra is None


def check_model_options(name: str, options: Iterable[str], source: str = "model options") -> None:
    """Refuse option names that model ``name`` does not take, suggesting the nearest known name."""
    known, takes_any = model_option_names(name)
    if not takes_any:
        refuse_unknown_names(options, known, f"{source} of {name}", what="option")


def build_model(name: str, **options: Any) -> nn.Module:
    """The detector ``name`` built with ``options`` (``num_classes`` among them); see the module docstring.
    Option names are checked first (:func:`check_model_options`)."""
    check_model_options(name, options)
    model = model_builder(name)(**options)
    recorded = getattr(model, "build_options", None)
    recorded = dict(recorded) if isinstance(recorded, Mapping) else dict(options)
    recorded.pop("builder", None)
    model.build_options = {"name": name, **{k: v for k, v in recorded.items() if k != "name"}}
    return model


def rebuild_model(build_options: Mapping[str, Any]) -> nn.Module:
    """The model described by ``build_options`` (a checkpoint's ``model_config``: ``{"name": ..., options}``).

    Checkpoints written before the registry name their model under ``"builder"``; both are read, and a
    missing name means :data:`DEFAULT_MODEL`.
    """
    options = dict(build_options)
    name = options.pop("name", None) or options.pop("builder", None) or DEFAULT_MODEL
    options.pop("builder", None)
    if "num_classes" not in options:
        raise ValueError("model options need num_classes (categories + 1); fix: pass the checkpoint's model_config "
                         "or add num_classes")
    return build_model(name, **options)
