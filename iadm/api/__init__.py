"""The monitor's operator API."""
