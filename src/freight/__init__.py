"""freight: large volumes of LLM requests through providers' batch APIs, and knowing when not to.

The library API is `freight.api`, exported here: `freight.run(...)`, `freight.Job`, `freight.resume(job_id)` ...; the
README shows it in use. It is imported on first use, so `python -m freight.server` and `freight --version` do not
load the runner and the store.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("freight")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from freight.api import Job, Report, SampleGateFailed, cancel, estimate, prepare, resume, run, sample
    from freight.domain import ExitCode, FreightError, JobHeld, JobStopped, UsageError

_API = ("Job", "Report", "SampleGateFailed", "cancel", "estimate", "prepare", "resume", "run", "sample")
_DOMAIN = ("ExitCode", "FreightError", "JobHeld", "JobStopped", "UsageError")
__all__ = [
    "ExitCode",
    "FreightError",
    "Job",
    "JobHeld",
    "JobStopped",
    "Report",
    "SampleGateFailed",
    "UsageError",
    "__version__",
    "cancel",
    "estimate",
    "prepare",
    "resume",
    "run",
    "sample",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        from freight import api

        return getattr(api, name)
    if name in _DOMAIN:
        from freight import domain

        return getattr(domain, name)
    raise AttributeError(f"module 'freight' has no attribute {name!r}")
