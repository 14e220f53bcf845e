"""What makes a face's one-line method look like the method it is: name, docstring and signature."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])
_WRAPPED = re.compile(r"^\w+\[(?P<inner>.+)\]$")
_SELF = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)


def method_like(method: _F, build: Callable[..., Any], owner: str, returns: Callable[[str], str]) -> _F:
    """``method`` (``(self, *args, **kwargs)``) with the name, docstring and signature of ``build``.

    The signature is the builder's with ``self`` in front, so ``inspect.signature`` and
    ``help()`` show the real parameters; its return annotation is the face's: ``returns``
    turns the builder's inner type (``Task`` of ``Unary[Task]``, ``WatchTasksResponse`` of
    ``TaskWatch``) into what the method gives (``Task``, ``Generator[...]``, ...).
    """
    sig = inspect.signature(build)
    ann = sig.return_annotation if isinstance(sig.return_annotation, str) else ""
    found = _WRAPPED.match(ann)
    inner = found["inner"] if found else _STREAMS.get(ann, ann)
    method.__name__ = build.__name__
    method.__qualname__ = f"{owner}.{build.__name__}"
    method.__doc__ = build.__doc__
    method.__wrapped__ = build  # type: ignore[attr-defined]
    method.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[_SELF, *sig.parameters.values()], return_annotation=returns(inner)
    )
    return method


# What each watch yields (its builder returns the Watch that resumes it).
_STREAMS = {"TaskWatch": "WatchTasksResponse", "RunWatch": "WatchRunsResponse"}
