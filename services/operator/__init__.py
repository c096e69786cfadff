"""Operator actions: what people do by hand, each recorded in the hash-chained audit log."""
