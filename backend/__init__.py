"""The backend: the one door from the pages and the CLI to everything that does work."""
from __future__ import annotations

from backend.api import Backend, SconesError
from backend.settings import Settings


def get_backend(settings: Settings) -> Backend:
    """The only place that chooses between the local and the AWS backend."""
    if settings.home.exists() and not settings.home.is_dir():
        raise SconesError(f"The workspace {settings.home} is a file, not a folder: choose a folder for --home or "
                          "SCONES_HOME (it is created when missing).")
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file on the way, no permission, a read-only or full disk
        raise SconesError(f"The workspace {settings.home} cannot be created ({exc.strerror or exc}): choose a folder "
                          "you can write to for --home or SCONES_HOME.") from None
    if settings.backend == "local":
        from backend.local.backend import LocalBackend

        return LocalBackend(settings)
    if settings.backend == "aws":
        from backend.aws.backend import AwsBackend

        return AwsBackend(settings)
    raise SconesError(f"Unknown backend {settings.backend!r}: use 'local' or 'aws'.")
