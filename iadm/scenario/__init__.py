"""Scenario runs on the reference topology: benign background, attacks injected in known windows."""
