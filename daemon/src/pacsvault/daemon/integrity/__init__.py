"""The appliance's care of its own data: the local scrub, the consistency check and
its repairs, index rebuild from the blobs, the trash and legal holds, and what health
must say about all of it."""
