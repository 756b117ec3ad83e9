"""Invoke task modules. Each only parses options and calls the library."""
