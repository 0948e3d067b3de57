"""DICOM parsing, validation and the DICOM JSON model."""
