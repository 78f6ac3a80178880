"""Exceptions of the Beamfleet client.

Every error the client raises is a :class:`BeamfleetError`; its message is one
line that names what is wrong: the endpoint, the file and field (with line and
column for YAML), or the broker's own reason.
"""
from __future__ import annotations

from typing import Optional

# bf_err_t of common/bf.h, numbered from BF_OK = 0 (docs/protocol.md section 14).
ERROR_NAMES = ["OK", "ENOMEM", "EINVAL", "EPROTO", "EIO", "ENOSPC", "ETIMEDOUT", "ECUDA",
               "ENOENT", "EEXIST", "EPERM", "ECANCELED", "ESTATE", "EDB", "ECHILD", "EUNSUPP"]


def one_line(text: str) -> str:
    """text with every control character (line breaks included) as '?', as
    the C side's bf_fail writes its messages: one line, whatever a value held."""
    return "".join("?" if ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF else c
                   for c in text)


class BeamfleetError(Exception):
    """Base class of every error raised by the beamfleet package. Its message
    is one line: control characters of the values it quotes show as '?'."""

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(str(message)))


class ConfigError(BeamfleetError, ValueError):
    """A bad argument, fleet file or key file (the message names the flag, file or field)."""


class JobError(ConfigError):
    """A job (file or dict) that cannot be submitted: the message names the
    file, line and column, and the field, as `beamfleet submit` does."""


class MissingDependency(BeamfleetError, ImportError):
    """An optional package (matplotlib, PyYAML) is needed for this call."""


class ConnectionFailed(BeamfleetError, ConnectionError):
    """Nothing answered as a Beamfleet peer at an endpoint."""

    def __init__(self, message: str, endpoint: str = ""):
        super().__init__(message)
        self.endpoint = endpoint


class FleetTimeout(ConnectionFailed, TimeoutError):
    """No answer from the broker (or no event from the collector) in time."""


class HandshakeError(ConnectionFailed):
    """The ZeroMQ handshake failed: CURVE on one side only, a refused key,
    a wrong server key, or a port that does not speak ZeroMQ."""


class ProtocolError(BeamfleetError):
    """A frame that is not a valid Beamfleet message (docs/protocol.md section 6)."""


class BrokerError(BeamfleetError):
    """The broker answered ERROR{code, reason}."""

    def __init__(self, reason: str, code: int, request: str = ""):
        name = ERROR_NAMES[code] if 0 <= code < len(ERROR_NAMES) else str(code)
        super().__init__(f"broker: {reason}" + (f" ({request}: {name})" if request else ""))
        self.reason = reason
        self.code = code
        self.code_name = name
        self.request = request


class JobRejected(BrokerError):
    """EINVAL: the broker refused the job document (the reason names the field)."""


class UnknownJob(BrokerError):
    """ENOENT: the broker does not know this job."""


class OutputInUse(BrokerError):
    """EEXIST: another running job writes to the same output directory."""


class PermissionDenied(BrokerError):
    """EPERM: this key's role may not send the request (docs/protocol.md section 15)."""


class ResultsError(BeamfleetError):
    """A report of the collector is missing or unreadable."""


_BY_CODE = {2: JobRejected, 8: UnknownJob, 9: OutputInUse, 10: PermissionDenied}


def broker_error(reason: str, code: int, request: str = "") -> BrokerError:
    """The BrokerError subclass for an ERROR reply's code."""
    return _BY_CODE.get(code, BrokerError)(reason, code, request)


def missing(package: str, pip_name: Optional[str] = None, what: str = "") -> MissingDependency:
    """A MissingDependency saying what needs the package and how to get it."""
    return MissingDependency(f"{what or 'this'} needs {package}: pip install {pip_name or package}")
