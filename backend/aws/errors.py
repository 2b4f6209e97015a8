"""AWS failures as the project's named errors, each one sentence a person can act on.

Nothing here ever formats a credential: messages name the operation and the error code only.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Iterator

from botocore.exceptions import (
    BotoCoreError, ClientError, ConnectionClosedError, ConnectTimeoutError, CredentialRetrievalError,
    EndpointConnectionError, NoCredentialsError, NoRegionError, PartialCredentialsError, ProfileNotFound,
    ProxyConnectionError, ReadTimeoutError, SSLError, SSOError, TokenRetrievalError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from backend.api import (
    AccessDenied, CredentialsError, NetworkError, ResourceInUse, ResourceLimitExceeded, ResourceNotFound, SconesError,
    Throttling, ValidationError,
)

REGION_HINT = "set AWS_REGION (or AWS_DEFAULT_REGION, or a region in the AWS profile), e.g. us-east-1"
CREDENTIALS_HINT = ("set AWS_PROFILE (after 'aws configure' or 'aws sso login'), or AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or use the local backend")

_CODES: dict[str, type[SconesError]] = {
    **dict.fromkeys(("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AllAccessDisabled",
                     "Forbidden", "403"), AccessDenied),
    **dict.fromkeys(("ResourceNotFound", "ResourceNotFoundException", "NoSuchKey", "NoSuchBucket", "404",
                     "NotFound", "StateMachineDoesNotExist", "ExecutionDoesNotExist", "NoSuchEntity"), ResourceNotFound),
    **dict.fromkeys(("Throttling", "ThrottlingException", "TooManyRequestsException", "SlowDown",
                     "RequestLimitExceeded"), Throttling),
    **dict.fromkeys(("ValidationException", "ValidationError", "InvalidParameterValue",
                     "InvalidParameterValueException", "InvalidRequest", "InvalidDefinition",
                     "InvalidArn", "MalformedPolicyDocument"), ValidationError),
    **dict.fromkeys(("ResourceLimitExceeded", "LimitExceededException", "ServiceQuotaExceededException", "LimitExceeded"),
                    ResourceLimitExceeded),
    **dict.fromkeys(("ResourceInUse", "ResourceInUseException", "ResourceConflictException",
                     "BucketAlreadyExists", "ExecutionAlreadyExists", "StateMachineAlreadyExists",
                     "EntityAlreadyExists", "DeleteConflict"), ResourceInUse),
    **dict.fromkeys(("ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException",
                     "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken"), CredentialsError),
}

_ADVICE: dict[type[SconesError], str] = {
    AccessDenied: "the credentials in use lack that permission; add it to their IAM policy (see README, Running on AWS)",
    ResourceNotFound: "check the name and the region, or create it first",
    Throttling: "AWS is rate-limiting this account; wait a moment and try again",
    ValidationError: "fix the value it names",
    ResourceLimitExceeded: "the account's quota is used up; request an increase in Service Quotas or use a smaller instance type",
    ResourceInUse: "it already exists or is busy; use another name or wait for it",
    CredentialsError: f"the AWS credentials are expired or invalid; {CREDENTIALS_HINT}",
}


def translate(exc: Exception, operation: str) -> SconesError:
    """One named error for any boto3/botocore failure of `operation`."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return CredentialsError(f"No AWS credentials were found for {operation}: {CREDENTIALS_HINT}.")
    if isinstance(exc, ProfileNotFound):
        return CredentialsError("The AWS profile named in AWS_PROFILE does not exist: fix AWS_PROFILE or run 'aws configure'.")
    if isinstance(exc, (SSOError, TokenRetrievalError)):  # an `aws sso login` session expired or never started
        profile = os.environ.get("AWS_PROFILE", "")
        login = f"aws sso login --profile {profile}" if profile else "aws sso login"
        return CredentialsError(f"The AWS SSO session is expired or was never started ({operation}): run "
                                f"'{login}', then try again.")
    if isinstance(exc, CredentialRetrievalError):  # its message may quote a credential process: not shown
        provider = exc.kwargs.get("provider", "the profile's credential source")
        return CredentialsError(f"The AWS credentials could not be retrieved from {provider} ({operation}): check "
                                f"that source in the AWS profile, or {CREDENTIALS_HINT}.")
    if isinstance(exc, NoRegionError):
        return CredentialsError(f"No AWS region is set for {operation}: {REGION_HINT}.")
    if isinstance(exc, ProxyConnectionError):
        return NetworkError(f"The proxy in HTTPS_PROXY / HTTP_PROXY could not be reached for {operation}; check it, "
                           "or unset it to connect to AWS directly.")
    if isinstance(exc, SSLError):
        return NetworkError(f"The TLS connection to AWS failed for {operation} (a certificate the machine does not "
                           "trust, often an intercepting proxy); set AWS_CA_BUNDLE to its CA file, or check the network.")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, BotoConnectionError)):
        return NetworkError(f"AWS could not be reached for {operation}; check the network (or use the local backend).")
    if isinstance(exc, ReadTimeoutError):
        return NetworkError(f"AWS did not answer in time for {operation}; check the network (or use the local backend).")
    if isinstance(exc, ConnectionClosedError):
        return NetworkError(f"AWS closed the connection during {operation}; check the network and try again.")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        detail = (err.get("Message") or "").strip().rstrip(".")
        cls = _CODES.get(code, SconesError)
        if cls is ValidationError and re.search(r"[Cc]ould not find|does not exist|not found", detail):
            cls = ResourceNotFound  # SageMaker reports a missing resource as a ValidationException
        advice = _ADVICE.get(cls, "see the AWS console for details")
        message = f"AWS refused {operation} ({code}{': ' + detail if detail else ''}); {advice}."
        out = cls(message)
        out.code = code or cls.code
        return out
    if isinstance(exc, BotoCoreError):
        return SconesError(f"{operation} failed in the AWS SDK ({type(exc).__name__}); check the AWS settings.")
    raise exc


@contextmanager
def aws_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, operation) from None
