"""Other tools' formats in and out: nnU-Net v2 model folders (import, export) and their predictions."""
