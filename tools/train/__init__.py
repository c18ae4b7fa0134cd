"""Training of the MedPix CLIP model (run on a GPU device; a tiny config runs on CPU)."""
