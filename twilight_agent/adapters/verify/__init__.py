"""Signature and provenance verifiers (cosign keys, keyless Sigstore bundles): the
``SignaturePort`` implementations, reading from the registry adapter."""
