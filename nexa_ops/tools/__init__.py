"""Thin wrappers over external tools; every call goes through ``nexa_ops.proc.run``."""
