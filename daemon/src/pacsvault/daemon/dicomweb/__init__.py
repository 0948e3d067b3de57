"""The DICOMweb door (PS3.18: QIDO-RS, WADO-RS, STOW-RS) and the share page, over HTTP.

Thin like the gRPC servicers: each handler validates, translates, makes its
use-case calls (``Search``, ``Retrieval``, ``Ingest``) in a thread, and
translates back; authentication, the access table and the audit trail are
the gRPC API's own (``guard.py``).
"""
