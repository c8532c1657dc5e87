"""Snort-style rules over packets and flow records: parser, engine, generation."""
