"""freight: large volumes of LLM requests through providers' batch APIs, and knowing when not to."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("freight")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
