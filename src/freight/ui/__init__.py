"""The dashboard (`freight ui`): server-rendered pages over the store; see `freight.ui.app`."""

from freight.ui.app import create_app

__all__ = ["create_app"]
