"""provgen.provenance: watermark, fingerprint, C2PA signing, registry and verification."""
