"""The device: boot and life cycle, profiles, RAM budget, credentials, admin operations."""
