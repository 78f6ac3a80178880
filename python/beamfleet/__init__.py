"""Beamfleet from Python: submit jobs to a fleet, follow them, read and plot
their results. Speaks the fleet's own wire protocol (docs/protocol.md) with
pyzmq and msgpack; CURVE keys from the fleet file are used as the C CLI uses
them.

    from beamfleet import Client
    with Client(fleet="fleet.yaml") as c:
        stream = c.watch()                # subscribe before submitting
        job = c.submit("job.yaml")
        for event in stream: ...          # {"event": "result", "result": {...}}
"""
from .client import Client, probe_endpoint
from .config import job_document, load_fleet
from .errors import (BeamfleetError, BrokerError, ConfigError, ConnectionFailed, FleetTimeout,
                     HandshakeError, JobError, JobRejected, MissingDependency, OutputInUse,
                     PermissionDenied, ProtocolError, ResultsError, UnknownJob)
from .results import (COLUMNS, plot_cdf, plot_improvement, plot_time_per_worker, read_results,
                      results, time_per_worker)
from .wire import VERSION as PROTOCOL_VERSION

__version__ = "0.1.0"

__all__ = ["Client", "probe_endpoint", "job_document", "load_fleet", "results", "read_results",
           "time_per_worker", "plot_cdf", "plot_improvement", "plot_time_per_worker", "COLUMNS",
           "PROTOCOL_VERSION", "BeamfleetError", "BrokerError", "ConfigError",
           "ConnectionFailed", "FleetTimeout", "HandshakeError", "JobError", "JobRejected",
           "MissingDependency", "OutputInUse", "PermissionDenied", "ProtocolError",
           "ResultsError", "UnknownJob", "__version__"]
