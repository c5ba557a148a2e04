"""Meridian control plane: the operator's HTTP API and page (kill switch, promotions, reads of
the ledger, a live portfolio stream)."""
