"""Flow table, Argus-style records, Bot-IoT features."""
