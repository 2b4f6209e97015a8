"""All configuration in one place: environment variables with local defaults.

Nothing else in the project reads `os.environ` for its own settings, except the two capture limits
(SCONES_CAPTURE_RETENTION_DAYS, SCONES_CAPTURE_MAX_BYTES), which the monitoring service and each endpoint
process read when they start; handlers in `lambdas/` read only the variables their Lambda configuration sets.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from backend.api import ValidationError

OFFICIAL_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
OFFICIAL_CIFAR_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
DEFAULT_CLASSES = ("bicycle", "motorcycle")
LOCAL_BUCKET = "scones-unlimited"
BACKENDS = ("local", "aws")
SAMPLE_ARCHIVE = Path(__file__).resolve().parent / "sample_data" / "cifar-100-python.tar.gz"


@dataclass(frozen=True)
class Settings:
    home: Path
    backend: str = "local"
    cifar_url: str = OFFICIAL_CIFAR_URL
    cifar_md5: str = OFFICIAL_CIFAR_MD5
    bucket: str = ""  # empty: "scones-unlimited" locally, "sagemaker-<region>-<account>" on AWS
    download_timeout: float = 30.0
    threshold: float = 0.93
    aws_region: str = ""  # SCONES_AWS_REGION or AWS_REGION; empty: boto3's chain (AWS_DEFAULT_REGION, profile)
    sagemaker_role_arn: str = ""
    lambda_role_arn: str = ""
    states_role_arn: str = ""
    training_instance_type: str = "ml.p3.2xlarge"
    endpoint_instance_type: str = "ml.m5.xlarge"

    @property
    def db_path(self) -> Path:
        return self.home / "scones.db"

    @property
    def buckets_dir(self) -> Path:
        return self.home / "buckets"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def downloads_dir(self) -> Path:
        return self.home / "downloads"

    @property
    def uploads_dir(self) -> Path:
        return self.home / "uploads"

    def with_overrides(self, home: str | os.PathLike | None = None,
                       backend: str | None = None) -> "Settings":
        """Apply command-line flags, which win over the environment."""
        out = self
        if home:
            out = replace(out, home=Path(home).expanduser().resolve())
        if backend:
            out = replace(out, backend=_check_backend(backend))
        return out


def _check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValidationError(f"Unknown backend '{name}': choose one of {', '.join(BACKENDS)}.")
    return name


def _float_env(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValidationError(f"{name}={raw!r} is not a number; set it to a number or unset it.") from None


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read the environment once (flag > environment > default is finished by `with_overrides`)."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("SCONES_HOME") or "~/.scones").expanduser().resolve()
    threshold = _float_env(env, "SCONES_THRESHOLD", 0.93)
    if not 0.0 <= threshold <= 1.0:
        raise ValidationError(f"SCONES_THRESHOLD={threshold} is outside 0..1; set a confidence between 0 and 1.")
    return Settings(
        home=home,
        backend=_check_backend(env.get("SCONES_BACKEND") or "local"),
        cifar_url=env.get("SCONES_CIFAR_URL") or OFFICIAL_CIFAR_URL,
        cifar_md5=(env.get("SCONES_CIFAR_MD5") or OFFICIAL_CIFAR_MD5).lower(),
        bucket=env.get("SCONES_BUCKET") or "",
        download_timeout=_float_env(env, "SCONES_DOWNLOAD_TIMEOUT", 30.0),
        threshold=threshold,
        # boto3 itself reads only AWS_DEFAULT_REGION (and the profile); AWS_REGION is what the AWS CLI v2
        # and Lambda set, and what an operator sets first, so it is honoured here.
        aws_region=env.get("SCONES_AWS_REGION") or env.get("AWS_REGION") or "",
        sagemaker_role_arn=env.get("SCONES_SAGEMAKER_ROLE_ARN") or "",
        lambda_role_arn=env.get("SCONES_LAMBDA_ROLE_ARN") or "",
        states_role_arn=env.get("SCONES_STATES_ROLE_ARN") or "",
        training_instance_type=env.get("SCONES_TRAINING_INSTANCE_TYPE") or "ml.p3.2xlarge",
        endpoint_instance_type=env.get("SCONES_ENDPOINT_INSTANCE_TYPE") or "ml.m5.xlarge",
    )
