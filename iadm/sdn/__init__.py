"""OpenFlow side: framework import, pure pipeline builders, controller core, app, launcher."""
