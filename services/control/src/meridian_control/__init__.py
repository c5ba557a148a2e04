"""Meridian control plane: an HTTP API over control.v1 (the kill switch first)."""
