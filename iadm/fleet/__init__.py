"""The fleet: events to Redis Streams (publisher, spool), the collector into PostgreSQL, the fleet's alert store."""
