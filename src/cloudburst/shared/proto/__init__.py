"""Compatibility re-exports of the wire messages under their original module paths."""
