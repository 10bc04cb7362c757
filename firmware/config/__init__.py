"""Device configuration: the profile schema and typed access, the RAM budget."""
