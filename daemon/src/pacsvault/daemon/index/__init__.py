"""The LMDB index: DICOM identity to blobs, with the secondary indexes queries need."""
