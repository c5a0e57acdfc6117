"""The sandbox's entry point, run by path: ``python -I -B .../_worker/__main__.py REQ CTL LIFE SOCK MODE``.

``REQ``, ``CTL``, ``LIFE`` and ``SOCK`` are inherited descriptors (the init
request, the control pipe, the grading process's lifeline, the request socket);
``MODE`` is ``auto``, ``namespaces`` or ``basic``.

Isolated mode (``-I``) puts neither this folder nor the working directory (the
sandbox's temp dir, which user code may write) on ``sys.path``, so no file there
can stand in for a module of the sandbox or of the standard library. Importing
this package by its dotted name would run :mod:`graders`' ``__init__`` (and pull
in its dependencies), so :func:`register_package` registers this folder as the
package ``graders.openai.python._worker`` by itself: its modules then find one
another with relative imports, from this folder and nowhere else.
"""

from __future__ import annotations

import importlib.util
import os
import sys

PACKAGE = "graders.openai.python._worker"


def register_package() -> None:
    """Make :data:`PACKAGE` importable from this file's folder alone, without importing its parent packages."""
    if PACKAGE in sys.modules:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(here, "__init__.py"), submodule_search_locations=[here])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the sandbox's package from {here}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)


def main(argv: list[str]) -> None:
    register_package()
    from graders.openai.python._worker._supervisor import supervise  # from this folder (see register_package)

    supervise(int(argv[0]), int(argv[1]), int(argv[2]), int(argv[3]), argv[4])


if __name__ == "__main__":
    main(sys.argv[1:])
