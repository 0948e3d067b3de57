"""Blob storage: small layers behind one interface (see blob_access)."""
