"""Security: the PKI (CA, TLS and site keys) and signed checkpoints."""
