"""A quiet start: TensorFlow's C++ start-up lines never reach the console.

Importing TensorFlow and finding its devices prints lines from C++ straight to the process's
stderr (file descriptor 2), where Python's logging and warnings filters cannot reach them: the
oneDNN notice, CUDA factories registered twice, and, on a machine without a GPU,
`failed call to cuInit: ... CUDA error`, which reads like a failure. A log level hides them only
together with TensorFlow's real warnings and errors, so instead the first `import tensorflow` of
the process runs with stderr caught in a temporary file, the devices are listed inside the same
window (that is when CUDA is probed), and afterwards every caught line that is not one of these
known start-up lines is written to stderr. Everything TensorFlow prints later reaches the user.
"""
from __future__ import annotations

import importlib.abc
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\)"
    r"|^[IWE]\d{4} .*(oneDNN custom operations|cuda drivers|cuInit|CUDA error|Unable to register cu"
    r"|computation placer|TensorFlow binary is optimized|cpu_feature_guard)"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
)


@contextmanager
def filtered_stderr(noise: re.Pattern = STARTUP_NOISE) -> Iterator[None]:
    """Catch everything written to file descriptor 2 meanwhile (C++ and Python alike), then pass
    on the lines that `noise` does not match."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode(errors="replace").splitlines(keepends=True)
                    if not noise.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run inside `filtered_stderr` together with the device probe."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, name: str):  # resource readers and the like: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with filtered_stderr():
            self.loader.exec_module(module)
            module.config.list_physical_devices()


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` through the other finders, as Python would, and hands it `_QuietLoader`.
    Looking it up (src.runtime.backend asks whether it is installed) imports nothing."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        for finder in [f for f in sys.meta_path if f is not self]:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _QuietLoader):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Make this process's first `import tensorflow` (or keras) quiet; no-op once it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines; its warnings and errors still show
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())
