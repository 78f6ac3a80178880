"""The client side of the Beamfleet protocol: what `beamfleet submit`,
`status`, `cancel` and `watch` do (cli/cli_client.c, cli/cli_watch.c), from
Python."""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import zmq

from . import wire
from .config import Fleet, Identity, job_document, load_fleet
from .errors import (BeamfleetError, ConfigError, FleetTimeout,
                     HandshakeError, ProtocolError, broker_error)

_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
log = logging.getLogger("beamfleet")
JobSpec = Union[str, "os.PathLike[str]", Dict[str, Any]]


# ZMQ_PROTOCOL_ERROR_ZMTP_* (libzmq's zmq.h), for a pyzmq that does not name them.
_MECHANISM_MISMATCH = getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", 0x11000002)
_CRYPTO_ERRORS = (getattr(zmq, "PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC", 0x11000001),
                  getattr(zmq, "PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE", 0x10000003))


def _handshake_failed(monitor: zmq.Socket) -> Optional[str]:
    """Why a handshake failed, from the pending monitor events (the words of
    bf_handshake_failed), or None."""
    from zmq.utils.monitor import recv_monitor_message

    why = None
    while monitor.poll(0):
        ev = recv_monitor_message(monitor)
        event, value = ev["event"], ev["value"]
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            why = (f"the server refused this CURVE key (ZAP status {value}): is its .public file "
                   "in the server's keys directory?")
        elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MECHANISM_MISMATCH:
            why = ("handshake failed (mechanism mismatch): one side uses CURVE and the other does "
                   "not (security: in the fleet file)")
        elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value in _CRYPTO_ERRORS:
            why = ("handshake failed (CURVE): the server's key is not the one in the keys "
                   "directory (broker.public?)")
        elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            why = (f"handshake failed ({os.strerror(value)}): one side uses CURVE and the other "
                   "does not (security: in the fleet file), or nothing there is a Beamfleet peer")
        elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            why = (f"handshake failed (ZMTP protocol error 0x{value:x}): nothing there answered "
                   "as a Beamfleet peer; is this the right host and port?")
    return why


def probe_endpoint(endpoint: str, curve: bool, timeout: float = 1.0) -> Optional[str]:
    """What listens at endpoint, read from its ZMTP greeting (bf_endpoint_probe):
    a sentence when that explains a silent peer or a failed handshake, else None."""
    fd: Optional[socket.socket] = None
    try:
        if endpoint.startswith("ipc://"):
            fd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            addr: Any = endpoint[6:]
        elif endpoint.startswith("tcp://") and ":" in endpoint[6:]:
            host, port = endpoint[6:].rsplit(":", 1)
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            host = "127.0.0.1" if host == "*" else host
            info = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            if not info:
                return None
            fd = socket.socket(info[0][0], socket.SOCK_STREAM)
            addr = info[0][4]
        else:
            return None
        fd.settimeout(2)
        try:
            fd.connect(addr)
        except OSError as e:
            return f"nothing listens at {endpoint} ({e.strerror or e})"
        got = b""
        deadline = time.monotonic() + timeout
        try:
            fd.sendall(bytes([0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3]))
            while len(got) < 64:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                fd.settimeout(left)
                chunk = fd.recv(64 - len(got))
                if not chunk:
                    break
                got += chunk
                if got[0] != 0xFF:
                    break
        except OSError:
            pass
    except (OSError, ValueError):
        return None
    finally:
        if fd is not None:
            fd.close()
    if not got:
        return (f"nothing at {endpoint} answered as a Beamfleet peer (it sent no ZeroMQ "
                "greeting); is this the right host and port?")
    if got[0] != 0xFF or (len(got) >= 10 and got[9] != 0x7F):
        shown = "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x22 else "." for b in got[:24])
        return (f"nothing at {endpoint} answered as a Beamfleet peer: it does not speak ZeroMQ "
                f"(it greeted with \"{shown}\"); is this the right host and port?")
    if len(got) >= 32:
        peer_curve = got[12:32].rstrip(b"\0") == b"CURVE"
        if peer_curve and not curve:
            return (f"handshake failed: the server at {endpoint} uses CURVE and this process has "
                    "no keys (security: in the fleet file)")
        if not peer_curve and curve:
            return (f"handshake failed: the server at {endpoint} is plaintext and this process "
                    "uses CURVE (security: in the fleet file)")
    return None


class Client:
    """A client of one Beamfleet fleet.

    broker: the broker's endpoint; default the fleet file's broker.endpoint,
        else $BEAMFLEET_BROKER, else tcp://127.0.0.1:5555 (as the CLI).
    fleet: a fleet file (YAML); with a ``security`` section every socket is
        a CURVE client with that identity's keys, as the CLI's are.
    timeout: seconds to wait for each answer of the broker.
    publish: the collector's stream; default the fleet file's collector.publish,
        else tcp://127.0.0.1:5557.
    collector_key: with security, the collector's key name in the keys
        directory (``beamfleet watch --collector-key``).

    Each request goes over a fresh DEALER with a random routing id and is sent
    once (a SUBMIT is never repeated, so it never creates a job twice).
    """

    def __init__(self, broker: Optional[str] = None, fleet: Optional[str] = None,
                 timeout: float = 10.0, publish: Optional[str] = None,
                 collector_key: str = "collector"):
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ConfigError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        self.fleet: Fleet = load_fleet(fleet)
        self.broker: str = broker or self.fleet.broker_endpoint
        self.publish: str = publish or self.fleet.collector_publish
        self.timeout = float(timeout)
        self.collector_key = collector_key
        #: the number of tasks of the job the last submit() created
        self.last_total: Optional[int] = None
        self.identity: Optional[Identity] = None
        if self.fleet.security_keys:
            try:
                self.identity = Identity(self.fleet.security_keys, self.fleet.security_identity or "")
            except ConfigError as e:
                raise ConfigError(f"{fleet}: security: {e}") from None
            if not zmq.has("curve"):
                raise ConfigError(f"{fleet}: security: this libzmq (pyzmq) has no CURVE support")
        self._ctx: Optional[zmq.Context] = zmq.Context()

    # ---- life ---------------------------------------------------------------
    def close(self) -> None:
        """Closes the ZeroMQ context (sockets are closed after each request)."""
        if self._ctx is not None:
            self._ctx.destroy(linger=0)  # also closes a watch() left unfinished
            self._ctx = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Client(broker={self.broker!r}, publish={self.publish!r}, "
                f"curve={'on' if self.identity else 'off'})")

    @property
    def ctx(self) -> zmq.Context:
        if self._ctx is None:
            raise BeamfleetError("this Client is closed")
        return self._ctx

    # ---- one request, one reply (cli_request) -----------------------------------
    def _explain(self, endpoint: str, why: str) -> str:
        better = probe_endpoint(endpoint, self.identity is not None)
        return better or why

    def request(self, name: str, timeout: Optional[float] = None,
                **fields: Any) -> Tuple[str, Dict[str, Any]]:
        """Sends one message to the broker and returns its reply as (type, fields).
        ERROR replies raise the BrokerError of their code."""
        frame = wire.encode(name, **fields)
        wait = self.timeout if timeout is None else timeout
        sock = self.ctx.socket(zmq.DEALER)
        monitor = None
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTING_ID, os.urandom(8))
            sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_FRAME + 1024)
            if self.identity:
                self.identity.apply(sock)
            monitor = sock.get_monitor_socket(_HANDSHAKE_EVENTS)
            try:
                sock.connect(self.broker)
            except zmq.ZMQError as e:
                raise ConfigError(f"broker {self.broker}: {e.strerror}") from None
            sock.send(frame)
            deadline = time.monotonic() + wait
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    why = (f"no answer from a broker at {self.broker} within {wait:g} s: nothing "
                           "there answered as a broker (is one running, and is this its port?)")
                    raise FleetTimeout(self._explain(self.broker, why), self.broker)
                ready = dict(poller.poll(int(left * 1000) + 1))
                if monitor in ready:
                    why = _handshake_failed(monitor)
                    if why:
                        raise HandshakeError(f"{self.broker}: {self._explain(self.broker, why)}",
                                             self.broker)
                if sock not in ready:
                    continue
                parts = sock.recv_multipart()
                if len(parts) != 1:
                    continue  # a multipart message is dropped whole
                try:
                    kind, reply = wire.decode(parts[0])
                except ProtocolError as e:
                    log.warning("dropping a malformed reply: %s", e)
                    continue  # as the CLI does
                if kind == "heartbeat":
                    continue
                if kind == "error":
                    raise broker_error(reply["reason"] or "error", reply["code"], name)
                return kind, reply
        finally:
            if monitor is not None:
                sock.disable_monitor()
                monitor.close(0)
            sock.close(0)

    # ---- the API ------------------------------------------------------------------
    def submit(self, job: JobSpec, base_dir: Optional[str] = None,
               timeout: Optional[float] = None) -> str:
        """Submits a job and returns its id (12 hex characters).

        job: a job file (YAML), read, checked and resolved as `beamfleet
        submit` does (scenes and output relative to the file; the scene
        sub-directories listed and sent), or a dict with the same keys
        (relative paths against base_dir, default the current directory).
        The scenes must be visible to the workers at the same path."""
        doc = job_document(job, base_dir)
        try:
            wire.encode("submit", obj=doc)
        except ProtocolError:
            raise ConfigError(f"the job document ({len(doc['scenes'])} scenes) does not fit in "
                              f"one message ({wire.MAX_FRAME >> 20} MiB at most): split the job "
                              "(max_scenes, or several scene folders)") from None
        kind, reply = self.request("submit", timeout, obj=doc)
        if kind != "submitted" or not reply["job_id"]:
            raise ProtocolError(f"unexpected reply to submit: {kind}")
        self.last_total = reply["total"]
        return reply["job_id"]

    def status(self, job_id: str = "", events: bool = False, cursor: int = 0) -> Dict[str, Any]:
        """The broker's status document, as `beamfleet status --json` prints it
        (workers, collector, queue, jobs; docs/protocol.md section 13). With
        events=True it keeps the final results of job_id ("" for all) after
        cursor, and next_seq to pass as the next cursor."""
        kind, reply = self.request("status", job_id=job_id, seq=cursor)
        if kind != "status-reply":
            raise ProtocolError(f"unexpected reply to status: {kind}")
        doc = reply["obj"]
        if not events:
            doc.pop("events", None)
        return doc

    def job(self, job_id: str) -> Dict[str, Any]:
        """The status entry of one job; UnknownJob when the broker has none."""
        for j in self.status(job_id).get("jobs", []):
            if j.get("id") == job_id:
                return j
        raise broker_error(f"the broker no longer knows job {job_id}", 8, "status")

    def cancel(self, job_id: str) -> int:
        """Cancels the job's queued and running tasks; returns how many were
        cancelled. UnknownJob when the broker does not know job_id."""
        if not isinstance(job_id, str) or not job_id:
            raise ConfigError(f"cancel: job_id: expected a job id, got {job_id!r}")
        kind, reply = self.request("cancel", job_id=job_id)
        if kind != "cancelled":
            raise ProtocolError(f"unexpected reply to cancel: {kind}")
        return int(reply["total"])

    def wait(self, job_id: str, timeout: Optional[float] = None,
             poll: float = 0.25) -> Dict[str, Any]:
        """Waits until every task of job_id is final and the collector has
        written every result (the broker's outbox is empty), as `beamfleet
        submit --wait` does; returns the job's status entry. FleetTimeout
        after timeout seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            st = self.status(job_id)
            job = next((j for j in st.get("jobs", []) if j.get("id") == job_id), None)
            if job is None:
                raise broker_error(f"the broker no longer knows job {job_id}", 8, "status")
            if job.get("state") != "running" and st.get("collector", {}).get("outbox") == 0:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise FleetTimeout(f"job {job_id} still {job.get('state')} after {timeout:g} s "
                                   f"({job.get('final')}/{job.get('total')} final)", self.broker)
            time.sleep(poll)

    def watch(self, job_id: Optional[str] = None, until_done: Optional[bool] = None,
              count: Optional[int] = None,
              idle_timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """The collector's live stream, as `beamfleet watch` prints it: yields
        ``{"event": "result", "result": {...}}`` for every result the
        collector has written and ``{"event": "job-done", "job": {...}}``
        when a job's final report is written.

        The stream has two topics, "result" and "job-done", and no per-job
        topic: with job_id, events of other jobs are dropped here. The socket
        connects when watch() is called, before the first next(): call it
        before submit() so that no result is missed (a PUB socket drops what
        is published before the subscription arrives; results.jsonl has the
        rest). until_done (default: True when job_id is given) stops after
        that job's job-done; count after that many events; idle_timeout
        raises FleetTimeout after so many seconds without an event."""
        if until_done is None:
            until_done = job_id is not None
        if count is not None and (not isinstance(count, int) or count <= 0):
            raise ConfigError(f"watch: count: expected a positive number, got {count!r}")
        sub = self.ctx.socket(zmq.SUB)
        monitor = None
        try:
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.MAXMSGSIZE, wire.MAX_FRAME + 1024)
            sub.setsockopt(zmq.SUBSCRIBE, b"result")
            sub.setsockopt(zmq.SUBSCRIBE, b"job-done")
            if self.identity:
                self.identity.apply(sub, self.identity.server_key(self.collector_key))
            monitor = sub.get_monitor_socket(_HANDSHAKE_EVENTS)
            sub.connect(self.publish)
        except zmq.ZMQError as e:
            if monitor is not None:
                sub.disable_monitor()
                monitor.close(0)
            sub.close(0)
            raise ConfigError(f"publish {self.publish}: {e.strerror}") from None
        except BaseException:
            if monitor is not None:
                sub.disable_monitor()
                monitor.close(0)
            sub.close(0)
            raise
        return self._stream(sub, monitor, job_id, until_done, count, idle_timeout)

    def _stream(self, sub: zmq.Socket, monitor: zmq.Socket, job_id: Optional[str],
                until_done: bool, count: Optional[int],
                idle_timeout: Optional[float]) -> Iterator[Dict[str, Any]]:
        seen = 0
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        last = time.monotonic()
        try:
            while count is None or seen < count:
                ready = dict(poller.poll(250))
                if monitor in ready:
                    why = _handshake_failed(monitor)
                    if why:
                        raise HandshakeError(f"{self.publish}: "
                                             f"{self._explain(self.publish, why)}", self.publish)
                if sub not in ready:
                    if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                        raise FleetTimeout(f"no event from the collector at {self.publish} "
                                           f"within {idle_timeout:g} s", self.publish)
                    continue
                parts = sub.recv_multipart()
                last = time.monotonic()
                if len(parts) != 2 or parts[0] not in (b"result", b"job-done"):
                    log.warning("watch: skipping a message of %d frames", len(parts))
                    continue  # not a message of the stream: skipped, as `watch` does
                try:
                    doc = wire.unpack_document(parts[1])
                except ProtocolError as e:
                    log.warning("watch: skipping an undecodable %r: %s", parts[0], e)
                    continue
                if parts[0] == b"result":
                    if job_id and doc.get("job_id") != job_id:
                        continue
                    event = {"event": "result", "result": doc}
                else:
                    if job_id and doc.get("id") != job_id:
                        continue
                    event = {"event": "job-done", "job": doc}
                seen += 1
                yield event
                if until_done and event["event"] == "job-done":
                    return
        finally:  # also when the Client was closed first (its context destroyed)
            if not sub.closed:
                sub.disable_monitor()
            monitor.close(0)
            sub.close(0)

    # ---- reports ----------------------------------------------------------------
    def results(self, output_dir: str, as_dataframe: Optional[bool] = None):
        """The job's results from the collector's reports in output_dir (see
        beamfleet.results)."""
        from .results import results
        return results(output_dir, as_dataframe)
