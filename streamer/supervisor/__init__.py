"""Runs one command as N worker processes on one machine (e.g. edges sharing their ports with SO_REUSEPORT):
restarts a worker that dies, forwards SIGTERM/SIGINT/SIGHUP, and speaks systemd's notify protocol for the group."""

from .group import Supervisor, run_workers
from .settings import SupervisorSettings, WorkerIdentity, default_workers

__all__ = ["Supervisor", "SupervisorSettings", "WorkerIdentity", "default_workers", "run_workers"]
