"""The DIMSE door: modalities and workstations reach the archive by DICOM networking (PS3.7, PS3.8).

Every serving process runs one pynetdicom association server on the port the
supervisor reserved (SO_REUSEPORT, like the API). Like the gRPC servicers, the
door only translates: C-STORE into ``Ingest.store``, C-FIND into
``Search.find``, C-MOVE and C-GET into ``Retrieval``, Storage Commitment into
``commitment.Commitments``; who may call what is the access table's decision
(each DIMSE service is treated as the gRPC method it corresponds to) and every
call is recorded in the audit trail with the fields the gRPC interceptor
writes. Nothing here touches blobs or the index directly.

    server.py      the association server: shared port, TLS, timeouts, presentation contexts
    guard.py       who is calling (calling AE, certificate), authorization, audit records
    connection.py  each connection's socket: bounded PDUs and data sets, prompt ACKs
    status.py      the one mapping from the daemon's errors to DIMSE statuses
    store.py       C-STORE SCP (and C-ECHO)
    find.py        C-FIND SCP: identifiers to queries, matches to identifiers
    retrieve.py    C-MOVE and C-GET SCP: stored bytes sent exactly as stored
    commitment.py  Storage Commitment Push Model SCP: N-ACTION, N-EVENT-REPORT
"""
