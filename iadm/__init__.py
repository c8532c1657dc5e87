"""iadm: intrusion detection and prevention for IoT gateways."""
__version__ = "0.1.0"
