"""Verification and interop: the cross-device check, golden vectors, the Hugging Face bridge and the
tolerances every comparison uses (with the reason for each)."""
