"""Site replication: erasure-coded shards of every blob at the peer appliance.

The lower half, usable without a daemon or a network:

- ``shard_format``: the self-describing, versioned header every shard carries.
- ``codec``: ``ErasureCodec`` splits a blob into k data + m parity shards
  (pyeclib, ``isa_l_rs_cauchy``) and decodes them, dropping every shard whose
  own BLAKE3 does not verify, and verifies the decoded blob's digest.
- ``shard_store``: the peer-side placement of shards over volumes, durable
  writes and resumable uploads.
- ``scrub``: a resumable, rate-limited pass that verifies shards and rebuilds
  damaged or missing ones.
- ``certs``: a test CA and the mutual-TLS certificates of an appliance pair.
- ``bench``: encode and decode throughput of the codec.
- ``_files``: the durable-write primitives the store and the scrub share.
"""
